//! JSON Merge Patch (RFC 7386): applying a patch, and computing the smallest
//! patch that turns one state into the next (the diff fans receive).

use serde_json::{Map, Value};

use super::state::{GameState, Scalar};

/// Applies `patch` to `target` in place, as RFC 7386 defines.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// The merge patch that turns `old` into `new`, for documents without `null`
/// values (ours have none). Objects recurse; anything else is replaced whole.
/// The oracle the property tests hold [`diff`] to.
#[cfg(test)]
pub fn diff_values(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut out = Map::new();
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) if ov == nv => {}
                    Some(ov) if ov.is_object() && nv.is_object() => {
                        out.insert(k.clone(), diff_values(ov, nv));
                    }
                    _ => {
                        out.insert(k.clone(), nv.clone());
                    }
                }
            }
            for k in o.keys() {
                if !n.contains_key(k) {
                    out.insert(k.clone(), Value::Null);
                }
            }
            Value::Object(out)
        }
        _ => new.clone(),
    }
}

/// The merge patch from `old` to `new`, holding only changed fields (and `seq`).
/// Field by field, without serialising either state whole.
pub fn diff(old: &GameState, new: &GameState) -> Value {
    let mut out = Map::new();
    if old.game != new.game {
        out.insert("game".into(), Value::from(new.game.as_str()));
    }
    if old.seq != new.seq {
        out.insert("seq".into(), Value::from(new.seq));
    }
    if old.status != new.status {
        out.insert("status".into(), Value::from(new.status.as_str()));
    }
    if old.period != new.period {
        out.insert("period".into(), Value::from(new.period));
    }
    if old.clock != new.clock {
        let mut c = Map::new();
        if old.clock.ms != new.clock.ms {
            c.insert("ms".into(), Value::from(new.clock.ms));
        }
        if old.clock.running != new.clock.running {
            c.insert("running".into(), Value::from(new.clock.running));
        }
        if old.clock.at != new.clock.at {
            c.insert("at".into(), Value::from(new.clock.at));
        }
        out.insert("clock".into(), Value::Object(c));
    }
    for (key, o, n) in [
        ("home", &old.home, &new.home),
        ("away", &old.away, &new.away),
    ] {
        if o != n {
            let mut t = Map::new();
            if o.name != n.name {
                t.insert("name".into(), Value::from(n.name.as_str()));
            }
            if o.score != n.score {
                t.insert("score".into(), Value::from(n.score));
            }
            out.insert(key.into(), Value::Object(t));
        }
    }
    if old.extra != new.extra {
        let mut e = Map::new();
        for (k, v) in &new.extra {
            if old.extra.get(k) != Some(v) {
                e.insert(k.clone(), scalar_value(v));
            }
        }
        for k in old.extra.keys() {
            if !new.extra.contains_key(k) {
                e.insert(k.clone(), Value::Null);
            }
        }
        out.insert("extra".into(), Value::Object(e));
    }
    Value::Object(out)
}

fn scalar_value(s: &Scalar) -> Value {
    match s {
        Scalar::Bool(b) => Value::from(*b),
        Scalar::Int(i) => Value::from(*i),
        Scalar::Float(f) => Value::from(*f),
        Scalar::Str(s) => Value::from(s.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_follows_rfc7386_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (target, patch, want) in cases {
            let mut t = target.clone();
            merge(&mut t, &patch);
            assert_eq!(t, want, "merge({target}, {patch})");
        }
    }

    #[test]
    fn diff_values_round_trips() {
        let old = json!({"a":1,"b":{"c":2,"d":3},"e":"x"});
        let new = json!({"a":1,"b":{"c":5,"d":3},"f":true});
        let d = diff_values(&old, &new);
        assert_eq!(d, json!({"b":{"c":5},"e":null,"f":true}));
        let mut t = old.clone();
        merge(&mut t, &d);
        assert_eq!(t, new);
    }
}
