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
        config.key_lines = connector_lines(text);
        problems.extend(connector_keys(config, file));
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

/// One key of the document, at any depth, or one table of an array of tables (no key).
struct Entry<'a> {
    /// `connectors[0].http.timeout_secs`.
    path: String,
    key: Option<Range<usize>>,
    value: &'a Spanned<DeValue<'a>>,
}

/// Every key and array item of `table`, depth first, in document order.
fn entries<'a>(table: &'a DeTable<'a>) -> Vec<Entry<'a>> {
    fn walk_table<'a>(table: &'a DeTable<'a>, prefix: &str, out: &mut Vec<Entry<'a>>) {
        for (key, value) in table.iter() {
            let path = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            out.push(Entry {
                path: path.clone(),
                key: Some(key.span()),
                value,
            });
            walk_value(value, &path, out);
        }
    }
    fn walk_value<'a>(value: &'a Spanned<DeValue<'a>>, path: &str, out: &mut Vec<Entry<'a>>) {
        match value.get_ref() {
            DeValue::Table(table) => walk_table(table, path, out),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let indexed = format!("{path}[{i}]");
                    out.push(Entry {
                        path: indexed.clone(),
                        key: None,
                        value: item,
                    });
                    walk_value(item, &indexed, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk_table(table, "", &mut out);
    out
}

/// The dotted path of the key whose span is `span`, and the text to blank to remove it: the
/// key through its value, or the whole `[table]` section when the key is a table header.
fn locate(text: &str, span: &Range<usize>) -> Option<(String, Range<usize>)> {
    let root = DeTable::parse(text).ok()?;
    let all = entries(root.get_ref());
    let (path, key, value) = all.into_iter().find_map(|e| {
        let k = e.key?;
        (k.start <= span.start && span.start < k.end.max(k.start + 1)).then_some((e.path, k, e.value))
    })?;
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
    let all = entries(root.get_ref());
    let table = all
        .iter()
        .find(|e| matches!(e.value.get_ref(), DeValue::Table(_)) && (e.value.span() == *span || e.key.as_ref() == Some(span)))?;
    let path = if table.path.is_empty() {
        name.to_owned()
    } else {
        format!("{}.{name}", table.path)
    };
    let inner = all.iter().find(|e| e.path == path)?;
    let key = inner.key.clone()?;
    Some((path, key.start..inner.value.span().end.max(key.end)))
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

/// A key no configuration type has: deserializing a table holding it asks serde which keys
/// the type takes. Keys are read in sorted order and `_` sorts before letters, so the probe is
/// met before any other key can fail.
const PROBE: &str = "__deskbridge_probe";

/// Unknown keys in each `[[connectors]]` entry's settings, checked against its kind, at every
/// level (`http`, `auth`, `webhook`), whatever else is wrong with the entry; they are removed
/// from the settings so that building the connector reports only the other problems.
fn connector_keys(config: &mut Config, file: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, entry) in config.connectors.iter_mut().enumerate() {
        let mut unknown = Vec::new();
        find_unknown(&entry.kind, &entry.settings, &mut Vec::new(), &mut unknown);
        for (path, expected) in unknown {
            remove_path(&mut entry.settings, &path);
            let dotted = format!("connectors[{i}].{}", path.join("."));
            let line = config.key_lines.get(&dotted).map(|l| format!(":{l}")).unwrap_or_default();
            problems.push(format!(
                "{file}{line}: unknown key {dotted} (id {:?}){}",
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
        if key == "type" && !known.contains(key) {
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
fn connector_lines(text: &str) -> std::collections::HashMap<String, usize> {
    let Ok(root) = DeTable::parse(text) else {
        return Default::default();
    };
    entries(root.get_ref())
        .into_iter()
        .filter(|e| e.path.starts_with("connectors["))
        .filter_map(|e| Some((e.path, line_of(text, e.key?.start))))
        .collect()
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
