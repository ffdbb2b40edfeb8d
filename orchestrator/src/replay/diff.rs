//! The first difference between two JSON values, as a JSON path.

use serde_json::Value;

/// The path (`$.payload.matched_connectors[0]`) of the first place where `recorded` and
/// `replayed` differ, walking objects in key order and arrays by index; `None` when equal.
pub fn first_difference(recorded: &Value, replayed: &Value) -> Option<String> {
    let mut path = String::from("$");
    walk(recorded, replayed, &mut path).then_some(path)
}

/// Appends the differing sub-path to `path` and returns true when the values differ.
fn walk(a: &Value, b: &Value, path: &mut String) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort_unstable();
            keys.dedup();
            for key in keys {
                let (va, vb) = (
                    x.get(key).unwrap_or(&Value::Null),
                    y.get(key).unwrap_or(&Value::Null),
                );
                if x.contains_key(key) != y.contains_key(key) {
                    push_key(path, key);
                    return true;
                }
                let len = path.len();
                push_key(path, key);
                if walk(va, vb, path) {
                    return true;
                }
                path.truncate(len);
            }
            false
        }
        (Value::Array(x), Value::Array(y)) => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                if walk(va, vb, path) {
                    return true;
                }
                path.truncate(len);
            }
            if x.len() != y.len() {
                path.push_str(&format!("[{}]", x.len().min(y.len())));
                return true;
            }
            false
        }
        _ => a != b,
    }
}

fn push_key(path: &mut String, key: &str) {
    if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        path.push('.');
        path.push_str(key);
    } else {
        path.push_str(&format!("[{}]", Value::String(key.to_owned())));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::first_difference;

    #[test]
    fn names_the_first_differing_field() {
        let a = json!({"event_type": "RoutingDecided", "payload": {"matched": ["approve"], "node_id": "gate"}});
        let b = json!({"event_type": "RoutingDecided", "payload": {"matched": ["revise"], "node_id": "gate"}});
        assert_eq!(
            first_difference(&a, &b).as_deref(),
            Some("$.payload.matched[0]")
        );
        assert_eq!(first_difference(&a, &a), None);
        assert_eq!(
            first_difference(&json!({"a": [1]}), &json!({"a": [1, 2]})).as_deref(),
            Some("$.a[1]")
        );
        assert_eq!(
            first_difference(&json!({"a b": 1}), &json!({})).as_deref(),
            Some("$[\"a b\"]")
        );
    }
}
