//! `/v1/txn` on the wire: the KV operations of a transaction (keys in any case, base64 values),
//! the bound on their number, and the `Results` / `Errors` answer.

use crate::InvalidInput;
use crate::fields::Fields;
use crate::response::KvPair;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most operations in one transaction.
pub const MAX_TXN_OPS: usize = 128;

/// Largest value of one operation, as a KV value (and the KV endpoint's body).
pub const MAX_TXN_VALUE: usize = 512 * 1024;

/// A KV operation's verb, with Consul's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvVerb {
    Set,
    Cas,
    Lock,
    Unlock,
    Get,
    GetOrEmpty,
    GetTree,
    CheckIndex,
    CheckSession,
    CheckNotExists,
    Delete,
    DeleteCas,
    DeleteTree,
    /// A verb Consul does not know: the transaction fails with an error for it, as in Consul.
    Unknown(String),
}

impl KvVerb {
    pub fn parse(text: &str) -> Self {
        match text {
            "set" => Self::Set,
            "cas" => Self::Cas,
            "lock" => Self::Lock,
            "unlock" => Self::Unlock,
            "get" => Self::Get,
            "get-or-empty" => Self::GetOrEmpty,
            "get-tree" => Self::GetTree,
            "check-index" => Self::CheckIndex,
            "check-session" => Self::CheckSession,
            "check-not-exists" => Self::CheckNotExists,
            "delete" => Self::Delete,
            "delete-cas" => Self::DeleteCas,
            "delete-tree" => Self::DeleteTree,
            other => Self::Unknown(other.to_owned()),
        }
    }

    /// Whether the verb may change the store (a transaction of reads only needs no write).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Self::Set
                | Self::Cas
                | Self::Lock
                | Self::Unlock
                | Self::Delete
                | Self::DeleteCas
                | Self::DeleteTree
        )
    }
}

/// One KV operation of a transaction. Fields a verb does not use are ignored, as in Consul.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvOp {
    pub verb: KvVerb,
    pub key: String,
    pub value: Vec<u8>,
    pub flags: u64,
    /// `Index`: the `ModifyIndex` a `cas`, `delete-cas` or `check-index` compares with.
    pub index: u64,
    pub session: String,
}

impl KvOp {
    pub fn new(verb: KvVerb, key: impl Into<String>) -> Self {
        Self {
            verb,
            key: key.into(),
            value: Vec::new(),
            flags: 0,
            index: 0,
            session: String::new(),
        }
    }
}

/// Why a transaction body was refused before any operation ran, and how Consul answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnInputError {
    /// 400.
    #[error("Failed to parse body: {0}")]
    Parse(String),
    /// 413.
    #[error("Transaction contains too many operations ({0} > {MAX_TXN_OPS})")]
    TooManyOps(usize),
    /// 413.
    #[error("Value for key {key:?} is too large ({size} > {MAX_TXN_VALUE} bytes)")]
    ValueTooLarge { key: String, size: usize },
    /// 400: a catalog (`Node`, `Service`, `Check`) or session operation, which this server's
    /// transactions do not carry.
    #[error(
        "operation {0}: only KV operations are supported in /v1/txn by this server \
         (Node, Service and Check operations are not)"
    )]
    Unsupported(usize),
}

/// Parses a transaction body: a JSON array of `{"KV": {...}}` operations.
pub fn parse_txn(body: &[u8]) -> Result<Vec<KvOp>, TxnInputError> {
    let parse = |e: String| TxnInputError::Parse(e);
    let value: Value = serde_json::from_slice(body).map_err(|e| parse(e.to_string()))?;
    let Value::Array(items) = value else {
        return Err(parse("the body must be a JSON array of operations".into()));
    };
    if items.len() > MAX_TXN_OPS {
        return Err(TxnInputError::TooManyOps(items.len()));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(n, item)| {
            let mut op = Fields::from_value(item, "operation").map_err(|e| parse(e.to_string()))?;
            match op.object(&["KV"]).map_err(|e| parse(e.to_string()))? {
                Some(kv) => kv_op(kv),
                None => Err(TxnInputError::Unsupported(n)),
            }
        })
        .collect()
}

fn kv_op(mut f: Fields) -> Result<KvOp, TxnInputError> {
    let parse = |e: InvalidInput| TxnInputError::Parse(e.to_string());
    let verb = KvVerb::parse(&f.string(&["Verb"]).map_err(parse)?.unwrap_or_default());
    let key = f.string(&["Key"]).map_err(parse)?.unwrap_or_default();
    let value = match f.take(&["Value"]) {
        None => Vec::new(),
        Some(Value::String(text)) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| TxnInputError::Parse(format!("failed to decode value: {e}")))?,
        Some(other) => {
            return Err(TxnInputError::Parse(format!(
                "unexpected value type: {}",
                json_type(&other)
            )));
        }
    };
    if value.len() > MAX_TXN_VALUE {
        return Err(TxnInputError::ValueTooLarge {
            key,
            size: value.len(),
        });
    }
    Ok(KvOp {
        verb,
        key,
        value,
        flags: f.u64(&["Flags"]).map_err(parse)?.unwrap_or(0),
        index: f.u64(&["Index"]).map_err(parse)?.unwrap_or(0),
        session: f.string(&["Session"]).map_err(parse)?.unwrap_or_default(),
    })
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The answer to `PUT /v1/txn`: `Results` on success (200), `Errors` otherwise (409); the other
/// one is `null`, as Consul answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TxnResponse {
    pub results: Option<Vec<TxnResult>>,
    pub errors: Option<Vec<TxnError>>,
}

/// One result: the entry an operation read or wrote (writes answer it without its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResult {
    #[serde(rename = "KV")]
    pub kv: KvPair,
}

/// Why one operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TxnError {
    pub op_index: usize,
    pub what: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kv_ops_in_any_case() {
        let ops = parse_txn(
            br#"[{"KV": {"Verb": "set", "Key": "a", "Value": "aGk=", "Flags": 3}},
                 {"kv": {"verb": "cas", "key": "b", "index": 7, "value": null}},
                 {"KV": {"Verb": "lock", "Key": "c", "Session": "s"}},
                 {"KV": {"Verb": "bogus", "Key": "d"}}]"#,
        )
        .unwrap();
        assert_eq!(ops[0].verb, KvVerb::Set);
        assert_eq!(ops[0].value, b"hi");
        assert_eq!(ops[0].flags, 3);
        assert_eq!((ops[1].verb.clone(), ops[1].index), (KvVerb::Cas, 7));
        assert!(ops[1].value.is_empty());
        assert_eq!(ops[2].session, "s");
        assert_eq!(ops[3].verb, KvVerb::Unknown("bogus".into()));
    }

    #[test]
    fn refuses_malformed_bodies() {
        for (body, want) in [
            (&b"{"[..], "Failed to parse body"),
            (b"{}", "array"),
            (
                br#"[{"KV": {"Verb": "set", "Value": "!!"}}]"#,
                "decode value",
            ),
            (
                br#"[{"KV": {"Verb": "set", "Value": 5}}]"#,
                "unexpected value type",
            ),
            (br#"[{"KV": {"Verb": "set", "Flags": "x"}}]"#, "Flags"),
            (br#"[{"Node": {"Verb": "get"}}]"#, "only KV"),
        ] {
            let error = parse_txn(body).unwrap_err().to_string();
            assert!(error.contains(want), "{error} lacks {want}");
        }
        let many = format!(
            "[{}]",
            vec![r#"{"KV": {"Verb": "get", "Key": "k"}}"#; MAX_TXN_OPS + 1].join(",")
        );
        assert_eq!(
            parse_txn(many.as_bytes()),
            Err(TxnInputError::TooManyOps(MAX_TXN_OPS + 1))
        );
    }

    #[test]
    fn answers_like_consul() {
        let ok = TxnResponse {
            results: Some(vec![]),
            errors: None,
        };
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"Results":[],"Errors":null}"#
        );
        let failed = TxnResponse {
            results: None,
            errors: Some(vec![TxnError {
                op_index: 1,
                what: "boom".into(),
            }]),
        };
        assert_eq!(
            serde_json::to_string(&failed).unwrap(),
            r#"{"Results":null,"Errors":[{"OpIndex":1,"What":"boom"}]}"#
        );
    }
}
