//! JSON Merge Patch (RFC 7386), written independently of the hub's own code so
//! that the load test is a second opinion on the diffs the hub sends, not an echo
//! of them.

use serde_json::{Map, Value};

/// Applies `patch` to `target` in place, following the algorithm of RFC 7386
/// section 2: an object patch merges key by key (a `null` value removes the
/// key), anything else replaces the target whole.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(entries) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(fields) = target else {
        return;
    };
    for (key, value) in entries {
        if value.is_null() {
            fields.remove(key);
        } else if let Some(member) = fields.get_mut(key) {
            merge_patch(member, value);
        } else {
            // A missing member starts as `null`, which is not an object: a nested
            // object patch then builds a fresh object and drops its own nulls.
            let mut member = Value::Null;
            merge_patch(&mut member, value);
            fields.insert(key.clone(), member);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::merge_patch;
    use serde_json::{Value, json};

    /// Applies `patch` to a copy of `target`.
    fn applied(target: Value, patch: Value) -> Value {
        let mut doc = target;
        merge_patch(&mut doc, &patch);
        doc
    }

    #[test]
    fn rfc7386_appendix_a_examples() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (target, patch, expected) in cases {
            let got = applied(target.clone(), patch.clone());
            assert_eq!(got, expected, "target {target} patch {patch}");
        }
    }

    #[test]
    fn rfc7386_section_3_example() {
        let target = json!({
            "title": "Goodbye!",
            "author": {"givenName": "John", "familyName": "Doe"},
            "tags": ["example", "sample"],
            "content": "This will be unchanged"
        });
        let patch = json!({
            "title": "Hello!",
            "phoneNumber": "+01-123-456-7890",
            "author": {"familyName": null},
            "tags": ["example"]
        });
        let expected = json!({
            "title": "Hello!",
            "author": {"givenName": "John"},
            "tags": ["example"],
            "content": "This will be unchanged",
            "phoneNumber": "+01-123-456-7890"
        });
        assert_eq!(applied(target, patch), expected);
    }

    #[test]
    fn score_diff_on_a_game_state() {
        let state = json!({
            "game": "lt:g1", "seq": 4, "status": "live", "period": 1,
            "clock": {"ms": 0, "running": false, "at": 0},
            "home": {"name": "H", "score": 3}, "away": {"name": "A", "score": 1},
            "extra": {"possession": "home"}
        });
        let diff = json!({"seq": 5, "home": {"score": 4}, "extra": {"possession": null}});
        let got = applied(state, diff);
        assert_eq!(got["seq"], json!(5));
        assert_eq!(got["home"], json!({"name": "H", "score": 4}));
        assert_eq!(got["away"], json!({"name": "A", "score": 1}));
        assert_eq!(got["extra"], json!({}));
    }
}
