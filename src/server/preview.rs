//! The mapping preview: raw ticket + mapping text → normalized request (or every error with
//! its line and key) → the catalog's and directory's facts → the decision → the rendered
//! comment. Nothing is written: not to the store, not to the ITSM; the decision point and the
//! directory are only asked.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::api::{ApiError, ApiJson};
use super::auth::Viewer;
use super::AppState;
use crate::mapping::Mapping;
use crate::render::CommentInput;
use crate::schema::Normalized;

/// What to preview.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// The connector instance whose comment markup (and, without `mapping`, whose mapping) to use.
    pub connector: String,
    /// Mapping text (TOML) to try; the connector's configured mapping when absent.
    #[serde(default)]
    pub mapping: Option<String>,
    /// The ticket: a raw ITSM record, or a stored ticket (`{source, key, number, url, updated, version, raw}`).
    #[schema(value_type = Object)]
    pub ticket: Value,
}

/// One problem in the mapping text.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MappingProblem {
    /// 1-based line in the mapping text, when known.
    pub line: Option<usize>,
    /// The key at fault (`fields.entitlement.id`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// Each stage's result; a stage that could not run is absent.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Preview {
    /// Where the preview stopped: `mapping`, `normalized`, `enrichment`, `decision` or `comment` (complete).
    pub reached: String,
    /// Every problem in the mapping text (empty when it compiles).
    pub mapping_errors: Vec<MappingProblem>,
    /// The mapping's result: an access request, incomplete (with every missing field), or not an access request.
    #[schema(value_type = Option<Object>)]
    pub normalized: Option<Value>,
    /// The request as the policy sees it, with the catalog's and directory's facts.
    #[schema(value_type = Option<Object>)]
    pub enriched: Option<Value>,
    /// Why the facts could not be gathered (a real pass would leave the request pending).
    pub enrichment_error: Option<String>,
    /// The decision.
    #[schema(value_type = Option<Object>)]
    pub decision: Option<Value>,
    /// Why the decision point did not decide (a real pass would leave the request pending).
    pub decision_error: Option<String>,
    /// The comment as it would be posted (with a placeholder marker).
    pub comment: Option<String>,
}

/// Splits `mapping:12: fields.x: message` (and TOML's `at line 3, column 5`) into parts.
fn problem(text: &str) -> MappingProblem {
    let rest = text.strip_prefix("mapping:").unwrap_or(text).trim_start();
    let mut parts = rest.splitn(3, ": ");
    let first = parts.next().unwrap_or_default();
    if let Ok(line) = first.parse::<usize>() {
        let key = parts.next().unwrap_or_default().to_owned();
        let message = parts.next().unwrap_or_default().to_owned();
        return MappingProblem {
            line: Some(line),
            key,
            message,
        };
    }
    let line = regex::Regex::new(r"line (\d+)")
        .ok()
        .and_then(|re| re.captures(rest)?.get(1)?.as_str().parse().ok());
    MappingProblem {
        line,
        key: String::new(),
        message: rest.to_owned(),
    }
}

/// Tries a mapping on a ticket, through enrichment, the decision point and the comment
/// template, writing nothing.
#[utoipa::path(
    post,
    path = "/api/preview",
    request_body = PreviewRequest,
    responses((status = 200, body = Preview), (status = 400, description = "a ticket that is not a JSON object, or a body that is not this JSON"), (status = 404, description = "no such connector"), (status = 401, description = "no valid token"), (status = 415, description = "the body is not application/json"))
)]
pub(super) async fn preview(
    State(state): State<AppState>,
    _caller: Viewer,
    ApiJson(request): ApiJson<PreviewRequest>,
) -> Result<Json<Preview>, ApiError> {
    let pipeline = &state.pipeline;
    let Some(instance) = pipeline.instance(&request.connector) else {
        return Err(ApiError::not_found(format!("no connector {:?}", request.connector)));
    };
    let ticket = crate::mapping::ticket_from_value(request.ticket, &request.connector)
        .map_err(|e| ApiError::bad_request(format!("ticket: {e:#}")))?;
    let mut out = Preview {
        reached: "mapping".into(),
        ..Preview::default()
    };
    let edited;
    let mapping: &Mapping = match &request.mapping {
        None => &instance.mapping,
        Some(text) => match Mapping::parse(text, "mapping") {
            Ok(m) => {
                edited = m;
                &edited
            }
            Err(e) => {
                out.mapping_errors = e.problems.iter().map(|p| problem(p)).collect();
                return Ok(Json(out));
            }
        },
    };
    let normalized = mapping.normalize(&ticket);
    out.normalized = Some(serde_json::to_value(&normalized).map_err(|e| ApiError::internal(&e.into()))?);
    out.reached = "normalized".into();
    let (decided, request) = match normalized {
        Normalized::NotAnAccessRequest { .. } => return Ok(Json(out)),
        Normalized::Incomplete { problems, .. } => (crate::pipeline::decide::incomplete_decision(mapping, &problems), None),
        Normalized::AccessRequest { request } => {
            let mut request = *request;
            if let Some(enricher) = pipeline.enricher() {
                if let Err(e) = enricher.enrich(&mut request).await {
                    out.enrichment_error = Some(e);
                    return Ok(Json(out));
                }
                out.enriched = serde_json::to_value(&request).ok();
            }
            out.reached = "enrichment".into();
            match pipeline.decision_point().decide(&request).await {
                Ok(decided) => (decided, Some(request)),
                Err(e) => {
                    out.decision_error = Some(e.to_string());
                    return Ok(Json(out));
                }
            }
        }
    };
    out.reached = "decision".into();
    out.decision = serde_json::to_value(&decided.decision).ok();
    let input = CommentInput {
        number: &ticket.number,
        request: request.as_ref(),
        decision: &decided.decision,
        supersedes: None,
    };
    out.comment = Some(render(pipeline, instance, &input)?);
    out.reached = "comment".into();
    Ok(Json(out))
}

fn render(
    pipeline: &crate::pipeline::Pipeline,
    instance: &crate::pipeline::Instance,
    input: &CommentInput<'_>,
) -> Result<String, ApiError> {
    pipeline
        .renderer()
        .render(input, "deskbridge-id:preview", instance.connector.markup())
        .map_err(|e| ApiError::bad_request(format!("the comment template failed: {e:#}")))
}

#[cfg(test)]
mod tests {
    use super::problem;

    #[test]
    fn problems_name_their_line_and_key() {
        let p = problem("mapping:12: fields.entitlement.id: no such field");
        assert_eq!(
            (p.line, p.key.as_str(), p.message.as_str()),
            (Some(12), "fields.entitlement.id", "no such field")
        );
        let p = problem("mapping: TOML parse error at line 3, column 5\n    |\n  3 | x =");
        assert_eq!(p.line, Some(3));
    }
}
