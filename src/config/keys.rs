//! Parsing the config so that every unknown key is reported at once, each as
//! `file:line: unknown key path.to.key`, instead of the first one only.
//!
//! serde stops at the first unknown field. Each time it does, the key is located in the
//! document (by its span), recorded, and blanked out of a working copy — newlines kept, so lines
//! stay where they were — and the file is parsed again. Connector settings belong to the
//! connector kind and are checked the same way against it.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::Config;

/// More unknown keys than this and the file is probably not a deskbridge config.
const MAX_UNKNOWN: usize = 50;

/// The config with unknown keys left out, and every unknown key; or no config, when another
/// error stops the parse, and the unknown keys found before it with that error.
pub fn parse(text: &str, file: &str) -> (Option<Config>, Vec<String>) {
    let mut work = text.to_owned();
    let mut problems = Vec::new();
    let config = loop {
        match toml::from_str::<Config>(&work) {
            Ok(config) => break Some(config),
            Err(e) => {
                let located = unknown_field(e.message())
                    .zip(e.span())
                    .and_then(|((_, expected), span)| locate(&work, &span).map(|(path, range)| (path, range, expected)));
                match located {
                    Some((path, range, expected)) if problems.len() < MAX_UNKNOWN => {
                        problems.push(format!(
                            "{file}:{}: unknown key {path}{}",
                            line_of(&work, range.start),
                            expected.map(|x| format!(" (expected {x})")).unwrap_or_default()
                        ));
                        blank(&mut work, range);
                    }
                    _ => {
                        let at = e.span().map(|s| format!(":{}", line_of(&work, s.start))).unwrap_or_default();
                        problems.push(format!("{file}{at}: {}", e.message().trim_end()));
                        break None;
                    }
                }
            }
        }
    };
    let mut config = config;
    if let Some(config) = &mut config {
        problems.extend(connector_keys(config, text, file));
    }
    (config, problems)
}

/// `unknown field `x`, expected one of …` → (`x`, `one of …`).
fn unknown_field(message: &str) -> Option<(String, Option<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (name, tail) = rest.split_once('`')?;
    let expected = tail.trim_start_matches(',').trim().strip_prefix("expected ").map(str::to_owned);
    Some((name.to_owned(), expected))
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Spaces over `range`, keeping newlines.
fn blank(text: &mut String, range: Range<usize>) {
    let replaced: String = text[range.clone()]
        .chars()
        .map(|c| if c == '\n' { '\n' } else { ' ' })
        .collect();
    text.replace_range(range, &replaced);
}

/// The dotted path of the key whose span is `span`, and the text to blank to remove it: the
/// key through its value, or the whole `[table]` section when the key is a table header.
fn locate(text: &str, span: &Range<usize>) -> Option<(String, Range<usize>)> {
    let root = DeTable::parse(text).ok()?;
    let mut found = None;
    find(root.get_ref(), "", span, &mut found);
    let (path, key, value) = found?;
    let end = if matches!(value.get_ref(), DeValue::Table(_)) && text[..key.start].trim_end().ends_with('[') {
        // `[section]`: up to the next header line or the end of the file.
        section_end(text, key.end)
    } else {
        value.span().end.max(key.end)
    };
    let start = if text[..key.start].trim_end().ends_with('[') {
        text[..key.start].rfind('[').map(|i| text[..i].rfind('\n').map_or(0, |n| n + 1)).unwrap_or(key.start)
    } else {
        key.start
    };
    Some((path, start..end))
}

fn section_end(text: &str, from: usize) -> usize {
    let mut offset = from;
    for line in text[from..].split_inclusive('\n').skip(1) {
        if line.trim_start().starts_with('[') {
            return offset + text[offset..].find(line).unwrap_or(0);
        }
        offset += line.len();
    }
    text.len()
}

type Found<'a> = Option<(String, Range<usize>, &'a Spanned<DeValue<'a>>)>;

fn find<'a>(table: &'a DeTable<'a>, prefix: &str, span: &Range<usize>, found: &mut Found<'a>) {
    for (key, value) in table.iter() {
        if found.is_some() {
            return;
        }
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        let k = key.span();
        if k.start <= span.start && span.start < k.end.max(k.start + 1) {
            *found = Some((path, k, value));
            return;
        }
        descend(value, &path, span, found);
    }
}

fn descend<'a>(value: &'a Spanned<DeValue<'a>>, path: &str, span: &Range<usize>, found: &mut Found<'a>) {
    match value.get_ref() {
        DeValue::Table(t) => find(t, path, span, found),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                descend(item, &format!("{path}[{i}]"), span, found);
            }
        }
        _ => {}
    }
}

/// Unknown keys in each `[[connectors]]` entry's settings, checked against its kind.
fn connector_keys(config: &mut Config, text: &str, file: &str) -> Vec<String> {
    let root = DeTable::parse(text).ok();
    let entries = root
        .as_ref()
        .and_then(|r| r.get_ref().get("connectors"))
        .and_then(|c| match c.get_ref() {
            DeValue::Array(items) => Some(items),
            _ => None,
        });
    let mut problems = Vec::new();
    for (i, entry) in config.connectors.iter_mut().enumerate() {
        let settings = &mut entry.settings;
        for _ in 0..MAX_UNKNOWN {
            let Err(message) = crate::registry::check(&entry.kind, settings.clone()) else { break };
            let Some((name, expected)) = unknown_field(&message) else { break };
            let mut path = Vec::new();
            if !remove_key(settings, &name, &mut path) {
                break;
            }
            let dotted = format!("connectors[{i}].{}", path.join("."));
            let line = entries
                .and_then(|items| items.get(i))
                .and_then(|item| key_span(item, &path))
                .map(|s| format!(":{}", line_of(text, s.start)))
                .unwrap_or_default();
            problems.push(format!(
                "{file}{line}: unknown key {dotted} (id {:?}){}",
                entry.id,
                expected.map(|x| format!(" (expected {x})")).unwrap_or_default()
            ));
        }
    }
    problems
}

/// Removes the first key named `name`, depth first; `path` is where it was.
fn remove_key(table: &mut toml::Table, name: &str, path: &mut Vec<String>) -> bool {
    if table.remove(name).is_some() {
        path.push(name.to_owned());
        return true;
    }
    for (key, value) in table.iter_mut() {
        if let toml::Value::Table(inner) = value {
            path.push(key.clone());
            if remove_key(inner, name, path) {
                return true;
            }
            path.pop();
        }
    }
    false
}

fn key_span(item: &Spanned<DeValue<'_>>, path: &[String]) -> Option<Range<usize>> {
    let DeValue::Table(table) = item.get_ref() else { return None };
    let (first, rest) = path.split_first()?;
    let (key, value) = table.iter().find(|(k, _)| k.get_ref().as_ref() == first.as_str())?;
    if rest.is_empty() {
        Some(key.span())
    } else {
        key_span(value, rest)
    }
}
