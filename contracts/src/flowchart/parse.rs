//! Text to [`FlowchartDoc`], collecting every problem instead of stopping at the first.
//!
//! Why the detour through a JSON value: serde stops at the first error, but a user fixing a
//! flowchart wants the whole list. So the text is first read into a `serde_json::Value` (syntax
//! errors, with line and column, and duplicate keys are found here), then the top level, each
//! node and each connector are deserialized separately. Each piece goes through `serde_ignored`
//! (every unknown key, with its path) around `serde_path_to_error` (the path of a type error), so
//! one bad node does not hide the problems of the others. Reading YAML and JSON into the same
//! value also guarantees that both spellings of a flowchart mean the same thing.

use super::error::{ValidationCode, ValidationError, join_index, join_key};
use super::model::{
    AgentDoc, ConditionDoc, Connector, Defaults, FlowchartDoc, ForgeDoc, GitPolicyDoc, Limits,
    MemoryConfig, MilestoneConfig, NoMatch, Node, PlanConfig, RagConfig, Retry, ScriptedError,
    ScriptedResponse, ScriptedToolCall, WorkspaceDoc,
};
use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::cell::Cell;
use std::fmt;

/// The syntax a flowchart text is written in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SourceFormat {
    Yaml,
    Json,
    /// JSON if the first non-whitespace character is `{`, else YAML. YAML is a superset of JSON,
    /// so this only decides which parser words the syntax errors.
    #[default]
    Auto,
}

impl SourceFormat {
    /// The format a file name's extension implies (`.json`, `.yaml`, `.yml`), else `Auto`.
    pub fn from_file_name(name: &str) -> Self {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".json") {
            SourceFormat::Json
        } else if lower.ends_with(".yaml") || lower.ends_with(".yml") {
            SourceFormat::Yaml
        } else {
            SourceFormat::Auto
        }
    }

    fn resolve(self, text: &str) -> SourceFormat {
        match self {
            SourceFormat::Auto if text.trim_start().starts_with('{') => SourceFormat::Json,
            SourceFormat::Auto => SourceFormat::Yaml,
            other => other,
        }
    }
}

/// Parses the text into a document; every syntax, unknown-key and type problem is returned.
pub fn parse(text: &str, format: SourceFormat) -> Result<FlowchartDoc, Vec<ValidationError>> {
    match parse_collect(text, format) {
        (Some(doc), errors) if errors.is_empty() => Ok(doc),
        (_, errors) => Err(errors),
    }
}

/// Like [`parse`], but also hands back the document when the only problems were unknown or
/// duplicate keys, so that [`super::load`] can report graph problems in the same pass.
pub(crate) fn parse_collect(
    text: &str,
    format: SourceFormat,
) -> (Option<FlowchartDoc>, Vec<ValidationError>) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut errors = Vec::new();
    let value = match read_value(text, format.resolve(text), &mut errors) {
        Ok(value) => value,
        Err(syntax) => {
            errors.push(syntax);
            return (None, errors);
        }
    };
    let doc = to_doc(value, &mut errors);
    (doc, errors)
}

// ---------------------------------------------------------------------------------------------
// Stage 1: text -> JSON value

fn read_value(
    text: &str,
    format: SourceFormat,
    issues: &mut Vec<ValidationError>,
) -> Result<Value, ValidationError> {
    let seed = ValueSeed {
        path: String::new(),
        issues,
    };
    if format == SourceFormat::Json {
        let mut de = serde_json::Deserializer::from_str(text);
        let value = seed.deserialize(&mut de).map_err(json_syntax)?;
        de.end().map_err(json_syntax)?;
        Ok(value)
    } else {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        seed.deserialize(de).map_err(|e| {
            let mut message = e.to_string();
            if let Some(loc) = e.location()
                && !message.contains("line")
            {
                message = format!("{message} at line {} column {}", loc.line(), loc.column());
            }
            ValidationError::new(
                ValidationCode::Syntax,
                "",
                format!("invalid YAML: {message}"),
            )
        })
    }
}

fn json_syntax(e: serde_json::Error) -> ValidationError {
    let mut message = e.to_string();
    if e.line() != 0 && !message.contains("line") {
        message = format!("{message} at line {} column {}", e.line(), e.column());
    }
    ValidationError::new(
        ValidationCode::Syntax,
        "",
        format!("invalid JSON: {message}"),
    )
}

/// Builds a `serde_json::Value`, recording duplicate keys and non-finite numbers (which JSON
/// cannot hold) instead of silently keeping one of them.
struct ValueSeed<'a> {
    path: String,
    issues: &'a mut Vec<ValidationError>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-compatible value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        match (i64::try_from(v), u64::try_from(v)) {
            (Ok(i), _) => Ok(Value::Number(i.into())),
            (_, Ok(u)) => Ok(Value::Number(u.into())),
            _ => {
                self.issues.push(ValidationError::new(
                    ValidationCode::InvalidValue,
                    self.path,
                    format!("integer {v} is out of range"),
                ));
                Ok(Value::Null)
            }
        }
    }

    fn visit_u128<E>(self, v: u128) -> Result<Value, E> {
        match u64::try_from(v) {
            Ok(u) => Ok(Value::Number(u.into())),
            Err(_) => {
                self.issues.push(ValidationError::new(
                    ValidationCode::InvalidValue,
                    self.path,
                    format!("integer {v} is out of range"),
                ));
                Ok(Value::Null)
            }
        }
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        match Number::from_f64(v) {
            Some(n) => Ok(Value::Number(n)),
            None => {
                self.issues.push(ValidationError::new(
                    ValidationCode::InvalidValue,
                    self.path,
                    format!("{v} is not a finite number"),
                ));
                Ok(Value::Null)
            }
        }
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_newtype_struct<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(ValueSeed {
            path: join_index(&self.path, items.len()),
            issues: &mut *self.issues,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let path = join_key(&self.path, &key);
            let value = map.next_value_seed(ValueSeed {
                path: path.clone(),
                issues: &mut *self.issues,
            })?;
            if out.contains_key(&key) {
                self.issues.push(ValidationError::new(
                    ValidationCode::DuplicateKey,
                    path,
                    format!("key `{key}` appears more than once in the same mapping"),
                ));
            }
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<Value, A::Error> {
        Err(de::Error::custom(
            "YAML tags are not supported in flowcharts",
        ))
    }
}

/// Mapping keys: strings, or YAML scalars written without quotes (`1:`, `true:`) as their text.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = String;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_bool<E>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// Stage 2: JSON value -> typed document, piece by piece

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn render(segs: &[Seg]) -> String {
    let mut out = String::new();
    for seg in segs {
        out = match seg {
            Seg::Key(k) => join_key(&out, k),
            Seg::Index(i) => join_index(&out, *i),
        };
    }
    out
}

fn to_doc(value: Value, errors: &mut Vec<ValidationError>) -> Option<FlowchartDoc> {
    let Value::Object(mut top) = value else {
        errors.push(ValidationError::new(
            ValidationCode::InvalidValue,
            "",
            format!(
                "a flowchart must be a mapping with `name` and `nodes`, found {}",
                kind(&value)
            ),
        ));
        return None;
    };
    // Nodes and connectors are deserialized one by one (below); the top level sees empty lists.
    let mut node_items = Vec::new();
    let mut connector_items = Vec::new();
    for (key, items) in [
        ("nodes", &mut node_items),
        ("connectors", &mut connector_items),
    ] {
        if let Some(Value::Array(list)) = top.get_mut(key) {
            *items = std::mem::take(list);
        }
    }
    let doc = typed::<FlowchartDoc>(Value::Object(top), Vec::new(), None, errors);
    let nodes: Vec<Option<Node>> = node_items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let owner = owner_of(&item, "node");
            typed(
                item,
                vec![Seg::Key("nodes".into()), Seg::Index(i)],
                owner.as_deref(),
                errors,
            )
        })
        .collect();
    let connectors: Vec<Option<Connector>> = connector_items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let owner = owner_of(&item, "connector");
            let base = vec![Seg::Key("connectors".into()), Seg::Index(i)];
            typed(item, base, owner.as_deref(), errors)
        })
        .collect();
    let mut doc = doc?;
    doc.nodes = nodes.into_iter().collect::<Option<Vec<_>>>()?;
    doc.connectors = connectors.into_iter().collect::<Option<Vec<_>>>()?;
    Some(doc)
}

/// "node `draft`" when the raw item has a string id, for messages.
fn owner_of(item: &Value, what: &str) -> Option<String> {
    item.get("id")
        .and_then(Value::as_str)
        .map(|id| format!("{what} `{id}`"))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Deserializes one piece, reporting its unknown keys and (at most one) type error.
fn typed<T: DeserializeOwned>(
    value: Value,
    base: Vec<Seg>,
    owner: Option<&str>,
    errors: &mut Vec<ValidationError>,
) -> Option<T> {
    let mut unknown: Vec<Vec<Seg>> = Vec::new();
    let result = {
        let mut record = |path: serde_ignored::Path<'_>| {
            let mut segs = base.clone();
            ignored_segments(&path, &mut segs);
            unknown.push(segs);
        };
        let ignored = serde_ignored::Deserializer::new(value, &mut record);
        // Strict: a list where a mapping is meant is a type error, not fields by position.
        serde_path_to_error::deserialize::<_, T>(crate::strict_json::Strict(ignored))
    };
    for segs in unknown {
        errors.push(unknown_key(&segs, owner));
    }
    match result {
        Ok(v) => Some(v),
        Err(err) => {
            let mut segs = base;
            for seg in err.path().iter() {
                match seg {
                    serde_path_to_error::Segment::Seq { index } => segs.push(Seg::Index(*index)),
                    serde_path_to_error::Segment::Map { key } => segs.push(Seg::Key(key.clone())),
                    serde_path_to_error::Segment::Enum { variant } => {
                        segs.push(Seg::Key(variant.clone()))
                    }
                    serde_path_to_error::Segment::Unknown => {}
                }
            }
            errors.push(type_error(segs, &err.into_inner().to_string(), owner));
            None
        }
    }
}

fn ignored_segments(path: &serde_ignored::Path<'_>, out: &mut Vec<Seg>) {
    match path {
        serde_ignored::Path::Root => {}
        serde_ignored::Path::Seq { parent, index } => {
            ignored_segments(parent, out);
            out.push(Seg::Index(*index));
        }
        serde_ignored::Path::Map { parent, key } => {
            ignored_segments(parent, out);
            out.push(Seg::Key(key.clone()));
        }
        serde_ignored::Path::Some { parent }
        | serde_ignored::Path::NewtypeStruct { parent }
        | serde_ignored::Path::NewtypeVariant { parent } => ignored_segments(parent, out),
    }
}

fn with_owner(owner: Option<&str>, message: String) -> String {
    match owner {
        Some(owner) => format!("{owner}: {message}"),
        None => message,
    }
}

fn type_error(mut segs: Vec<Seg>, raw: &str, owner: Option<&str>) -> ValidationError {
    if let Some(rest) = raw.strip_prefix("missing field `")
        && let Some(field) = rest.split('`').next()
    {
        segs.push(Seg::Key(field.to_owned()));
        return ValidationError::new(
            ValidationCode::MissingKey,
            render(&segs),
            with_owner(owner, format!("missing required key `{field}`")),
        );
    }
    if let Some(message) = unknown_variant(&segs, raw) {
        return ValidationError::new(
            ValidationCode::InvalidValue,
            render(&segs),
            with_owner(owner, message),
        );
    }
    ValidationError::new(
        ValidationCode::InvalidValue,
        render(&segs),
        with_owner(owner, friendly(raw)),
    )
}

/// Rewords serde's "unknown variant `x`, expected one of `a`, `b`" in the flowchart's terms:
/// a tool operation is named as such, with the tool's operations listed.
fn unknown_variant(segs: &[Seg], raw: &str) -> Option<String> {
    let rest = raw.strip_prefix("unknown variant `")?;
    let (given, rest) = rest.split_once('`')?;
    let allowed: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let key = |back: usize| match segs.len().checked_sub(back).and_then(|i| segs.get(i)) {
        Some(Seg::Key(k)) => Some(k.as_str()),
        _ => None,
    };
    let given = given.escape_debug();
    Some(match (key(1), key(2)) {
        (Some("operation"), Some(tool)) => format!(
            "the {tool} tool has no operation `{given}`; its operations are: {}",
            allowed.join(", ")
        ),
        (Some(field), _) => format!(
            "`{given}` is not a valid `{field}`; use one of: {}",
            allowed.join(", ")
        ),
        _ => format!("`{given}` is not one of: {}", allowed.join(", ")),
    })
}

/// Rewords serde's Rust-flavoured type names for people writing YAML.
fn friendly(raw: &str) -> String {
    let mut message = raw.to_owned();
    for (rust, user) in [
        ("expected u64", "expected a non-negative integer"),
        ("expected u32", "expected a non-negative integer"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
        ("invalid type: map", "invalid type: mapping"),
        ("invalid type: sequence", "invalid type: list"),
        ("expected a map", "expected a mapping"),
        ("expected a sequence", "expected a list"),
        // `strict_json`'s refusal of a list where a mapping is meant.
        (
            "a JSON object (with named fields), not an array",
            "a mapping",
        ),
    ] {
        message = message.replace(rust, user);
    }
    if let Some(pos) = message.find("expected struct ") {
        message.truncate(pos);
        message.push_str("expected a mapping");
    }
    message
}

fn unknown_key(segs: &[Seg], owner: Option<&str>) -> ValidationError {
    let key = match segs.last() {
        Some(Seg::Key(k)) => k.clone(),
        Some(Seg::Index(i)) => i.to_string(),
        None => String::new(),
    };
    let mut message = with_owner(owner, format!("unknown key `{key}`"));
    if let Some(parent) = segs.len().checked_sub(1).map(|n| &segs[..n])
        && let Some(known) = known_keys(parent)
    {
        if let Some(best) = closest(&key, known) {
            message.push_str(&format!("; did you mean `{best}`?"));
        } else {
            message.push_str(&format!("; known keys here: {}", known.join(", ")));
        }
    }
    ValidationError::new(ValidationCode::UnknownKey, render(segs), message)
}

/// Field names of the struct found at `parent` (for "did you mean" hints).
fn known_keys(parent: &[Seg]) -> Option<&'static [&'static str]> {
    let last_key = |n: usize| match parent.len().checked_sub(n).and_then(|i| parent.get(i)) {
        Some(Seg::Key(k)) => Some(k.as_str()),
        _ => None,
    };
    let fields = match (parent.last(), last_key(1), last_key(2)) {
        (None, _, _) => struct_fields::<FlowchartDoc>(),
        (Some(Seg::Index(_)), _, Some("nodes")) => struct_fields::<Node>(),
        (Some(Seg::Index(_)), _, Some("connectors")) => struct_fields::<Connector>(),
        (Some(Seg::Index(_)), _, Some("scripted")) => struct_fields::<ScriptedResponse>(),
        (Some(Seg::Index(_)), _, Some("conditions")) => struct_fields::<ConditionDoc>(),
        (Some(Seg::Index(_)), _, Some("tool_calls")) => struct_fields::<ScriptedToolCall>(),
        (_, Some("agent"), _) => struct_fields::<AgentDoc>(),
        (_, Some("workspace"), _) => struct_fields::<WorkspaceDoc>(),
        (_, Some("git_policy"), _) => struct_fields::<GitPolicyDoc>(),
        (_, Some("forge"), _) => struct_fields::<ForgeDoc>(),
        (_, Some("limits"), _) => struct_fields::<Limits>(),
        (_, Some("defaults"), _) => struct_fields::<Defaults>(),
        (_, Some("retry"), _) => struct_fields::<Retry>(),
        (_, Some("error"), _) => struct_fields::<ScriptedError>(),
        (_, Some("no_match"), _) => struct_fields::<NoMatch>(),
        (_, Some("memory"), _) => struct_fields::<MemoryConfig>(),
        (_, Some("plan"), _) => struct_fields::<PlanConfig>(),
        (_, Some("milestone"), _) => struct_fields::<MilestoneConfig>(),
        (_, Some("rag"), _) => struct_fields::<RagConfig>(),
        _ => &[],
    };
    (!fields.is_empty()).then_some(fields)
}

fn closest(key: &str, known: &[&'static str]) -> Option<&'static str> {
    let limit = (key.chars().count() / 3).clamp(1, 3);
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The field names serde's derive knows for `T`, read by asking it to deserialize a struct
/// from a deserializer that only records the field list. Keeps hints in sync with the model.
fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a Cell<&'static [&'static str]>);

    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("probe"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.set(fields);
            Err(de::Error::custom("probe"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    let cell = Cell::new(&[][..]);
    let _ = T::deserialize(Probe(&cell));
    cell.get()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ValidationCode as C;

    fn errs(text: &str) -> Vec<ValidationError> {
        match parse(text, SourceFormat::Auto) {
            Ok(doc) => panic!("expected errors, parsed {doc:?}"),
            Err(e) => e,
        }
    }

    fn pairs(errors: &[ValidationError]) -> Vec<(ValidationCode, &str)> {
        let mut v: Vec<_> = errors.iter().map(|e| (e.code, e.path.as_str())).collect();
        v.sort();
        v
    }

    const MINIMAL: &str = "name: x\nnodes:\n  - { id: s, type: start }\n";

    #[test]
    fn minimal_document_parses() {
        let doc = parse(MINIMAL, SourceFormat::Yaml).unwrap();
        assert_eq!(doc.name, "x");
        assert_eq!(doc.nodes.len(), 1);
        assert!(doc.connectors.is_empty());
    }

    #[test]
    fn unknown_keys_at_three_depths_are_all_reported() {
        let text = r#"
name: x
colour: blue
nodes:
  - id: s
    type: start
  - id: t
    type: task
    model: scripted
    timout_s: 5
    retry: { max_attempts: 2, backof_ms: 10 }
    scripted:
      - output: 1
        extra: true
connectors:
  - { id: c1, from: s, to: t, weight: 3 }
"#;
        let errors = errs(text);
        assert!(errors.iter().all(|e| e.code == C::UnknownKey), "{errors:?}");
        assert_eq!(
            pairs(&errors),
            vec![
                (C::UnknownKey, "colour"),
                (C::UnknownKey, "connectors[0].weight"),
                (C::UnknownKey, "nodes[1].retry.backof_ms"),
                (C::UnknownKey, "nodes[1].scripted[0].extra"),
                (C::UnknownKey, "nodes[1].timout_s"),
            ]
        );
        let timeout = errors
            .iter()
            .find(|e| e.path == "nodes[1].timout_s")
            .unwrap();
        assert!(timeout.message.contains("node `t`"), "{}", timeout.message);
        assert!(
            timeout.message.contains("did you mean `timeout_s`"),
            "{}",
            timeout.message
        );
        let backoff = errors
            .iter()
            .find(|e| e.path == "nodes[1].retry.backof_ms")
            .unwrap();
        assert!(
            backoff.message.contains("`backoff_ms`"),
            "{}",
            backoff.message
        );
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let yaml = errs("name: x\nnodes: [\n  - a: b\n");
        assert_eq!(yaml.len(), 1);
        assert_eq!(yaml[0].code, C::Syntax);
        assert_eq!(yaml[0].path, "");
        assert!(
            yaml[0].message.contains("line") && yaml[0].message.contains("column"),
            "{}",
            yaml[0].message
        );

        let json = errs("{\"name\": \"x\",\n \"nodes\": [}");
        assert_eq!(json[0].code, C::Syntax);
        assert!(
            json[0].message.contains("line 2 column"),
            "{}",
            json[0].message
        );
    }

    #[test]
    fn explicit_json_format_rejects_yaml() {
        let e = parse(MINIMAL, SourceFormat::Json).unwrap_err();
        assert_eq!(e[0].code, C::Syntax);
        assert!(e[0].message.starts_with("invalid JSON"));
    }

    #[test]
    fn type_errors_have_paths_and_each_node_is_checked() {
        let text = r#"
name: x
limits: { max_node_executions: many }
nodes:
  - { id: s, type: start }
  - { id: a, type: tsk }
  - { id: b, type: task, timeout_s: -3 }
  - { id: c, type: task, fan_in: { custom: two } }
  - { type: end }
connectors:
  - { id: c1, from: s }
"#;
        let errors = errs(text);
        assert_eq!(
            pairs(&errors),
            vec![
                (C::InvalidValue, "limits.max_node_executions"),
                (C::InvalidValue, "nodes[1].type"),
                (C::InvalidValue, "nodes[2].timeout_s"),
                (C::InvalidValue, "nodes[3].fan_in.custom"),
                (C::MissingKey, "connectors[0].to"),
                (C::MissingKey, "nodes[4].id"),
            ]
        );
        let tsk = errors.iter().find(|e| e.path == "nodes[1].type").unwrap();
        assert!(
            tsk.message.contains("node `a`") && tsk.message.contains("`tsk`"),
            "{}",
            tsk.message
        );
    }

    /// serde reads a struct from a list, field by field: a list where a mapping is meant
    /// loaded (`[s, start]` was node `s`), and the error must name the mapping's path.
    #[test]
    fn a_list_where_a_mapping_is_meant_is_refused_at_its_path() {
        let text = r#"
name: x
limits: [50]
nodes:
  - [s, start]
  - { id: t, type: task, model: scripted, retry: [2, 10] }
  - { id: d, type: end }
connectors:
  - [c1, s, t]
"#;
        let errors = errs(text);
        let mut found = pairs(&errors);
        found.sort();
        assert_eq!(
            found,
            vec![
                (C::InvalidValue, "connectors[0]"),
                (C::InvalidValue, "limits"),
                (C::InvalidValue, "nodes[0]"),
                (C::InvalidValue, "nodes[1].retry"),
            ],
            "{errors:#?}"
        );
        assert!(
            errors
                .iter()
                .all(|e| e.message.contains("invalid type: list, expected a mapping")),
            "{errors:#?}"
        );
    }

    #[test]
    fn an_unknown_tool_operation_is_named_in_the_flowchart_terms() {
        let text = "name: x\nnodes:\n  - { id: m, type: memory, memory: { operation: frobnicate, args: {} } }\n";
        let errors = errs(text);
        let error = errors
            .iter()
            .find(|e| e.path == "nodes[0].memory.operation")
            .unwrap();
        assert_eq!(error.code, C::InvalidValue);
        assert_eq!(
            error.message,
            "node `m`: the memory tool has no operation `frobnicate`; its operations are: get, list, create, update, delete, search"
        );
        assert!(
            !error.message.contains("variant"),
            "no serde words: {}",
            error.message
        );
    }

    #[test]
    fn missing_top_level_keys() {
        let errors = errs("description: nothing\n");
        assert_eq!(pairs(&errors), vec![(C::MissingKey, "name")]);
        // Serde stops at the first missing field of one struct; `nodes` is reported once `name` is there.
        let errors = errs("name: x\n");
        assert_eq!(pairs(&errors), vec![(C::MissingKey, "nodes")]);
        let errors = errs("- just a list\n");
        assert_eq!(pairs(&errors), vec![(C::InvalidValue, "")]);
        let errors = errs("");
        assert_eq!(pairs(&errors), vec![(C::InvalidValue, "")]);
    }

    #[test]
    fn duplicate_keys_are_reported() {
        let text = "name: x\nname: y\nnodes:\n  - { id: s, type: start, id: t }\n";
        let errors = errs(text);
        assert_eq!(
            pairs(&errors),
            vec![(C::DuplicateKey, "name"), (C::DuplicateKey, "nodes[0].id")]
        );
        let json = errs(r#"{"name": "x", "nodes": [], "nodes": []}"#);
        assert_eq!(pairs(&json), vec![(C::DuplicateKey, "nodes")]);
    }

    #[test]
    fn non_finite_numbers_are_invalid() {
        let text = "name: x\ndefaults: { retry: { backoff_multiplier: .inf } }\nnodes: []\n";
        let errors = errs(text);
        assert_eq!(errors[0].code, C::InvalidValue);
        assert_eq!(errors[0].path, "defaults.retry.backoff_multiplier");
    }

    #[test]
    fn yaml_and_json_give_equal_documents() {
        let yaml = r#"
name: same
limits: { max_node_executions: 10 }
defaults: { timeout_s: 20, retry: { max_attempts: 2, backoff_multiplier: 1.5 } }
nodes:
  - { id: s, type: start }
  - id: t
    type: task
    model: scripted
    fan_in: { custom: 1 }
    output_schema: { type: object }
    scripted:
      - output: { text: "hi", n: 3, ok: true, none: null }
      - error: { code: boom, message: "bad" }
        delay_ms: 5
  - { id: m, type: memory, memory: { operation: search, args: { q: x } } }
  - { id: e, type: end, fan_in: any }
connectors:
  - { id: c1, from: s, to: t }
  - { id: c2, from: t, to: m, mode: dotted }
"#;
        let json = r#"{
  "name": "same",
  "limits": {"max_node_executions": 10},
  "defaults": {"timeout_s": 20, "retry": {"max_attempts": 2, "backoff_multiplier": 1.5}},
  "nodes": [
    {"id": "s", "type": "start"},
    {"id": "t", "type": "task", "model": "scripted", "fan_in": {"custom": 1},
     "output_schema": {"type": "object"},
     "scripted": [{"output": {"text": "hi", "n": 3, "ok": true, "none": null}},
                  {"error": {"code": "boom", "message": "bad"}, "delay_ms": 5}]},
    {"id": "m", "type": "memory", "memory": {"operation": "search", "args": {"q": "x"}}},
    {"id": "e", "type": "end", "fan_in": "any"}
  ],
  "connectors": [
    {"id": "c1", "from": "s", "to": "t"},
    {"id": "c2", "from": "t", "to": "m", "mode": "dotted"}
  ]
}"#;
        let from_yaml = parse(yaml, SourceFormat::Yaml).unwrap();
        let from_json = parse(json, SourceFormat::Auto).unwrap();
        let from_json_as_yaml = parse(json, SourceFormat::Yaml).unwrap();
        assert_eq!(from_yaml, from_json);
        assert_eq!(from_json, from_json_as_yaml);
        assert_eq!(from_yaml.nodes[1].retry, None);
        assert_eq!(
            from_yaml
                .defaults
                .as_ref()
                .unwrap()
                .retry
                .unwrap()
                .backoff_ms,
            500
        );
    }

    #[test]
    fn odd_keys_are_quoted_in_paths() {
        let errors = errs("name: x\nnodes: []\n\"odd key\": 1\n");
        assert_eq!(errors[0].path, "[\"odd key\"]");
    }

    #[test]
    fn format_detection() {
        assert_eq!(
            SourceFormat::Auto.resolve("  \n{\"a\":1}"),
            SourceFormat::Json
        );
        assert_eq!(SourceFormat::Auto.resolve("a: 1"), SourceFormat::Yaml);
        assert_eq!(
            SourceFormat::from_file_name("x/FLOW.JSON"),
            SourceFormat::Json
        );
        assert_eq!(SourceFormat::from_file_name("flow.yml"), SourceFormat::Yaml);
        assert_eq!(SourceFormat::from_file_name("flow"), SourceFormat::Auto);
    }

    #[test]
    fn struct_fields_probe_reads_serde_names() {
        let fields = struct_fields::<Node>();
        assert!(fields.contains(&"type") && fields.contains(&"no_match"));
        assert!(!fields.contains(&"node_type"));
        assert_eq!(
            struct_fields::<Retry>(),
            &["max_attempts", "backoff_ms", "backoff_multiplier"]
        );
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("timout_s", "timeout_s"), 1);
        assert_eq!(edit_distance("", "ab"), 2);
        assert_eq!(closest("zzzzzz", &["name"]), None);
    }
}
