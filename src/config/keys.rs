//! Parsing the config so that every unknown key is reported at once, each as
//! `file:line: unknown key path.to.key`, instead of the first one only.
//!
//! serde stops at the first unknown field. Each time it does, the key is located in the
//! document (by its span), recorded, and blanked out of a working copy — newlines kept, so lines
//! stay where they were — and the file is parsed again. Connector settings belong to the
//! connector kind and are checked the same way against it.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

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
                let located = unknown_field(e.message()).zip(e.span()).and_then(|((name, expected), span)| {
                    locate(&work, &span)
                        .or_else(|| locate_in_table(&work, &span, &name))
                        .map(|(path, range)| (path, range, expected))
                });
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
    // In the order of the file.
    let line = |p: &String| -> usize {
        p.strip_prefix(file)
            .and_then(|rest| rest.strip_prefix(':'))
            .and_then(|rest| rest.split(':').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(usize::MAX)
    };
    problems.sort_by_key(line);
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
    let replaced: String = text[range.clone()].chars().map(|c| if c == '\n' { '\n' } else { ' ' }).collect();
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
        text[..key.start]
            .rfind('[')
            .map(|i| text[..i].rfind('\n').map_or(0, |n| n + 1))
            .unwrap_or(key.start)
    } else {
        key.start
    };
    Some((path, start..end))
}

/// For an error spanning a whole table (serde reports unknown fields of an internally tagged
/// enum, like `[decision]`, at the table): the key `name` inside that table.
fn locate_in_table(text: &str, span: &Range<usize>, name: &str) -> Option<(String, Range<usize>)> {
    let root = DeTable::parse(text).ok()?;
    let mut found: Found<'_> = None;
    table_at(root.get_ref(), "", span, &mut found);
    let (path, _, table) = found?;
    let DeValue::Table(table) = table.get_ref() else { return None };
    let (key, value) = table.iter().find(|(k, _)| k.get_ref().as_ref() == name)?;
    let path = if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    };
    Some((path, key.span().start..value.span().end.max(key.span().end)))
}

fn table_at<'a>(table: &'a DeTable<'a>, prefix: &str, span: &Range<usize>, found: &mut Found<'a>) {
    for (key, value) in table.iter() {
        if found.is_some() {
            return;
        }
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        match value.get_ref() {
            DeValue::Table(inner) => {
                if value.span() == *span || key.span() == *span {
                    *found = Some((path, key.span(), value));
                    return;
                }
                table_at(inner, &path, span, found);
            }
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let DeValue::Table(inner) = item.get_ref() {
                        let indexed = format!("{path}[{i}]");
                        if item.span() == *span {
                            *found = Some((indexed, item.span(), item));
                            return;
                        }
                        table_at(inner, &indexed, span, found);
                    }
                }
            }
            _ => {}
        }
    }
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

/// A key no configuration type has: deserializing a table holding it asks serde which keys
/// the type takes. Keys are read in sorted order and `_` sorts before letters, so the probe is
/// met before any other key can fail.
const PROBE: &str = "__deskbridge_probe";

/// Unknown keys in each `[[connectors]]` entry's settings, checked against its kind, at every
/// level (`http`, `auth`, `webhook`), whatever else is wrong with the entry; they are removed
/// from the settings so that building the connector reports only the other problems.
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
        let mut unknown = Vec::new();
        find_unknown(&entry.kind, &entry.settings, &mut Vec::new(), &mut unknown);
        for (path, expected) in unknown {
            remove_path(&mut entry.settings, &path);
            let line = entries
                .and_then(|items| items.get(i))
                .and_then(|item| key_span(item, &path))
                .map(|s| format!(":{}", line_of(text, s.start)))
                .unwrap_or_default();
            problems.push(format!(
                "{file}{line}: unknown key connectors[{i}].{} (id {:?}){}",
                path.join("."),
                entry.id,
                expected.map(|x| format!(" (expected {x})")).unwrap_or_default()
            ));
        }
    }
    problems
}

/// The keys the settings type takes at `path`, learnt by probing; `None` if it does not say.
fn expected_keys(kind: &str, settings: &toml::Table, path: &[String]) -> Option<(Vec<String>, String)> {
    // Only the chain down to `path`, each level keeping its `type` tag (tagged enums need it).
    fn scratch(level: &toml::Table, path: &[String]) -> toml::Table {
        let mut out = toml::Table::new();
        if let Some(tag) = level.get("type") {
            out.insert("type".into(), tag.clone());
        }
        match path.split_first() {
            None => {
                out.insert(PROBE.into(), toml::Value::Boolean(true));
            }
            Some((first, rest)) => {
                let inner = level.get(first).and_then(toml::Value::as_table).cloned().unwrap_or_default();
                out.insert(first.clone(), toml::Value::Table(scratch(&inner, rest)));
            }
        }
        out
    }
    let message = crate::registry::check(kind, scratch(settings, path)).err()?;
    let (name, expected) = unknown_field(&message)?;
    if name != PROBE {
        return None;
    }
    let expected = expected.unwrap_or_default();
    let keys = expected.split('`').skip(1).step_by(2).map(str::to_owned).collect();
    Some((keys, expected))
}

fn find_unknown(kind: &str, settings: &toml::Table, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, Option<String>)>) {
    let level = path.iter().try_fold(settings, |t, k| t.get(k).and_then(toml::Value::as_table));
    let (Some(level), Some((known, expected))) = (level, expected_keys(kind, settings, path)) else {
        return;
    };
    for (key, value) in level {
        if key == "type" && level.contains_key("type") && !known.contains(key) {
            continue; // an enum's tag
        }
        path.push(key.clone());
        if !known.contains(key) {
            out.push((path.clone(), Some(expected.clone())));
        } else if value.is_table() {
            find_unknown(kind, settings, path, out);
        }
        path.pop();
    }
}

/// The line of every key inside `[[connectors]]` entries, by dotted path.
pub fn connector_lines(text: &str) -> std::collections::HashMap<String, usize> {
    fn walk(value: &Spanned<DeValue<'_>>, path: &str, text: &str, out: &mut std::collections::HashMap<String, usize>) {
        if let DeValue::Table(table) = value.get_ref() {
            for (key, inner) in table.iter() {
                let here = format!("{path}.{}", key.get_ref());
                out.insert(here.clone(), line_of(text, key.span().start));
                walk(inner, &here, text, out);
            }
        }
    }
    let mut out = std::collections::HashMap::new();
    if let Ok(root) = DeTable::parse(text) {
        if let Some(DeValue::Array(items)) = root.get_ref().get("connectors").map(|c| c.get_ref()) {
            for (i, item) in items.iter().enumerate() {
                walk(item, &format!("connectors[{i}]"), text, &mut out);
            }
        }
    }
    out
}

fn remove_path(table: &mut toml::Table, path: &[String]) {
    match path {
        [] => {}
        [last] => {
            table.remove(last);
        }
        [first, rest @ ..] => {
            if let Some(toml::Value::Table(inner)) = table.get_mut(first) {
                remove_path(inner, rest);
            }
        }
    }
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
