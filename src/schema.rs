//! The common access-request schema every connector's tickets are normalized into, and the
//! decision a decision point returns. `deskbridge schema` prints both as JSON Schema; the
//! committed copy is `src/schema.json`.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a request came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceTicket {
    /// Connector instance id.
    pub connector: String,
    /// The ITSM's stable id of the ticket.
    pub key: String,
    /// Human-facing number (`RITM0010001`).
    pub number: String,
    /// Link to the ticket, built by the connector.
    pub url: String,
    /// The ticket version this request was read from.
    pub version: String,
}

/// What is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// New access.
    Grant,
    /// Remove access.
    Revoke,
    /// Change existing access.
    Modify,
    /// Keep existing access for longer.
    Extend,
    /// Create a (non-human) identity.
    CreateIdentity,
    /// Rotate a credential (API key, secret).
    RotateCredential,
}

/// A person known to the ITSM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Person {
    /// Stable user id (ServiceNow `user_name`, Jira `accountId`).
    pub id: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Email address.
    pub email: Option<String>,
}

/// The kind of identity that receives the access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// A human.
    Person,
    /// A service account.
    ServiceAccount,
    /// A workload identity (pod, function, VM).
    Workload,
    /// An API key.
    ApiKey,
}

/// Who receives the access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Beneficiary {
    /// Person or non-human identity.
    #[serde(rename = "type")]
    pub kind: IdentityKind,
    /// Stable id of the identity.
    pub id: String,
    /// Display name.
    pub display_name: Option<String>,
}

/// Deployment environment of the target system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    /// Production.
    Prod,
    /// Staging / pre-production.
    Staging,
    /// Test / QA.
    Test,
    /// Development.
    Dev,
}

/// The system the access is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// System or application id.
    pub system: String,
    /// Its environment.
    pub environment: Environment,
}

/// The entitlement (role, group, permission set) asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Entitlement {
    /// Entitlement id in the target system.
    pub id: String,
    /// Display name.
    pub name: Option<String>,
    /// Administrative or otherwise privileged.
    pub privileged: bool,
}

/// How urgent the requester says it is (evidence only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

/// One approval recorded in the ITSM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordedApproval {
    /// Who approved or was asked.
    pub approver: String,
    /// The ITSM's state (`requested`, `approved`, `rejected`).
    pub state: String,
}

/// Approval context from the ticket. Informational only: it never decides anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproverContext {
    /// Assignment group of the ticket.
    pub assignment_group: Option<String>,
    /// The approver named in the ticket.
    pub named_approver: Option<String>,
    /// The ticket's own approval field (e.g. ServiceNow `approval`).
    pub itsm_approval: Option<String>,
    /// The ticket's state in the ITSM (`open`, `closed_complete`, …).
    pub itsm_state: Option<String>,
    /// Approvals recorded in the ITSM.
    pub recorded: Vec<RecordedApproval>,
}

/// Details that matter for non-human identities.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NhiDetails {
    /// Accountable human owner.
    pub owner: Option<String>,
    /// What the identity is for.
    pub purpose: Option<String>,
    /// When it must be reviewed or removed.
    pub expires_at: Option<NaiveDate>,
}

/// One normalized access request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessRequest {
    /// The ticket it came from.
    pub source: SourceTicket,
    /// What is asked for.
    pub kind: RequestKind,
    /// Who asked.
    pub requester: Person,
    /// Who receives the access.
    pub beneficiary: Beneficiary,
    /// Where.
    pub target: Target,
    /// What.
    pub entitlement: Entitlement,
    /// Free text from the requester: evidence only, never a decision input beyond presence.
    pub justification: Option<String>,
    /// Requested duration in days.
    pub duration_days: Option<u32>,
    /// Requested end date.
    pub expires_at: Option<NaiveDate>,
    /// Stated urgency.
    pub urgency: Option<Urgency>,
    /// Approval context (informational).
    pub approver_context: ApproverContext,
    /// Non-human identity details, when the beneficiary is not a person.
    pub nhi: Option<NhiDetails>,
    /// Further attributes the mapping extracts.
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// What the entitlement catalog says about the ask. Set by deskbridge's enrichment step
    /// from the admin-owned catalog, never by a mapping or a ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<CatalogFacts>,
    /// What the identity directory says about the people involved. Set by enrichment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<DirectoryFacts>,
    /// What the ticket claimed about facts the catalog owns, kept as evidence only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<Claims>,
}

/// The catalog's entry for the requested system and entitlement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogFacts {
    /// `version (sha256:…)` of the catalog used.
    pub version: String,
    /// Who approves: the system's owner, or the catalog's default owner for what it does not know.
    pub owner: String,
    /// The system, when the catalog knows it.
    pub system: Option<CatalogSystem>,
    /// The entitlement, when the catalog knows it.
    pub entitlement: Option<CatalogEntitlement>,
}

/// A system as the catalog holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogSystem {
    /// Canonical id.
    pub id: String,
    /// Where it runs.
    pub environment: String,
    /// Its control-owner group.
    pub owner: String,
}

/// An entitlement as the catalog holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntitlement {
    /// Canonical id.
    pub id: String,
    /// `standard`, `sensitive` or `privileged`.
    pub tier: String,
    /// The longest it may be held.
    pub max_duration_days: u32,
    /// Whether non-human identities may hold it.
    pub nhi_allowed: bool,
    /// Separation-of-duties conflicts.
    pub conflicts: Vec<CatalogConflict>,
    /// The directory group that represents it.
    pub group: Option<String>,
}

/// A conflict with another entitlement (`system/entitlement`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogConflict {
    /// `system/entitlement`.
    pub with: String,
    /// Whether a control owner may accept it.
    pub mitigable: bool,
}

/// The directory's answers about the people a request involves. `None` for a person means the
/// directory does not know them (or nobody was named).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectoryFacts {
    /// Which directory answered.
    pub source: String,
    /// The requester.
    pub requester: Option<IdentityFacts>,
    /// The beneficiary.
    pub beneficiary: Option<IdentityFacts>,
    /// The named approver, when the ticket names one.
    pub approver: Option<IdentityFacts>,
    /// The accountable owner of a non-human beneficiary, when named.
    pub nhi_owner: Option<IdentityFacts>,
}

/// One identity as the directory holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityFacts {
    /// Its user name in the directory.
    pub user_name: String,
    /// Whether the account is active.
    pub active: bool,
    /// `Employee`, `Contractor`, `ServiceAccount`, …
    pub user_type: Option<String>,
    /// Department (Enterprise User extension).
    pub department: Option<String>,
    /// The manager's user name.
    pub manager: Option<String>,
    /// Employee number.
    pub employee_number: Option<String>,
    /// Directory groups held (display names).
    pub groups: Vec<String>,
    /// Catalog entitlements those groups represent (`system/entitlement`).
    pub entitlements: Vec<String>,
}

/// What the ticket said about facts the catalog owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The system as typed.
    pub system: String,
    /// The entitlement as typed.
    pub entitlement: String,
    /// Whether the ticket said it is privileged.
    pub privileged: bool,
    /// The environment the ticket named.
    pub environment: Environment,
}

/// One field the mapping could not fill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldProblem {
    /// The schema field (`entitlement.id`).
    pub field: String,
    /// Why (`missing: variables.role is empty`).
    pub reason: String,
}

/// What a ticket normalizes into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Normalized {
    /// A complete access request.
    AccessRequest {
        /// The request.
        request: Box<AccessRequest>,
    },
    /// An access request missing required fields.
    Incomplete {
        /// The source ticket.
        source: SourceTicket,
        /// Every missing or invalid field.
        problems: Vec<FieldProblem>,
    },
    /// Plain support work.
    NotAnAccessRequest {
        /// The source ticket.
        source: SourceTicket,
        /// Why it is not one.
        reason: String,
    },
}

impl Normalized {
    /// The JSON of [`Normalized::AccessRequest`] for a borrowed request: the same text, without
    /// copying the request into a `Normalized` first.
    pub fn access_request_json(request: &AccessRequest) -> serde_json::Result<serde_json::Value> {
        #[derive(Serialize)]
        #[serde(tag = "status", rename_all = "snake_case")]
        enum Borrowed<'a> {
            AccessRequest { request: &'a AccessRequest },
        }
        serde_json::to_value(Borrowed::AccessRequest { request })
    }
}

/// What the decision point decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Access may be provisioned (within the obligations).
    Approve,
    /// Access must not be provisioned.
    Deny,
    /// A named control owner must approve.
    Review,
    /// The request lacks information.
    NeedsInfo,
}

impl Outcome {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Deny => "deny",
            Self::Review => "review",
            Self::NeedsInfo => "needs_info",
        }
    }
}

/// Conditions attached to a decision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Obligations {
    /// Access must end within this many days.
    #[serde(default)]
    pub max_duration_days: Option<u32>,
    /// Step-up (phishing-resistant MFA) is required to use the access.
    #[serde(default)]
    pub step_up: bool,
}

/// A decision on one access request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// The outcome.
    pub outcome: Outcome,
    /// Why, in words an approver understands.
    pub reasons: Vec<String>,
    /// For `review`: the approver or group that must approve.
    pub route_to: Option<String>,
    /// For `needs_info`: the fields that are missing.
    pub missing: Vec<String>,
    /// Conditions on the access.
    pub obligations: Obligations,
    /// Which policy decided.
    pub policy_id: String,
    /// Which version of it.
    pub policy_version: String,
    /// Unique id of this decision.
    pub decision_id: String,
    /// When.
    pub decided_at: DateTime<Utc>,
}

/// The JSON Schema of the request and decision contract.
pub fn contract_schema() -> serde_json::Value {
    serde_json::json!({
        "$comment": "deskbridge contract: generated by `deskbridge schema`; do not edit by hand",
        "access_request": schemars::schema_for!(AccessRequest),
        "normalized": schemars::schema_for!(Normalized),
        "decision": schemars::schema_for!(Decision),
    })
}
