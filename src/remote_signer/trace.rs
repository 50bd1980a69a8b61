//! octez error traces: the JSON list the HTTP signer returns, and the
//! binary form of the socket protocol (`u32 total ‖ (u32 len ‖ BSON)*`,
//! each BSON document being the JSON error object).

/// One error of a trace, shaped as octez's generic `failure` error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceError {
    /// `temporary` or `permanent`.
    pub kind: &'static str,
    /// The error id (`failure` is the one every octez client prints).
    pub id: String,
    /// The message.
    pub msg: String,
}

impl TraceError {
    /// A `temporary` `failure` with `msg`, as octez's signer reports
    /// errors.
    pub fn failure(msg: impl Into<String>) -> Self {
        TraceError {
            kind: "temporary",
            id: "failure".into(),
            msg: msg.into(),
        }
    }

    fn fields(&self) -> [(&str, &str); 3] {
        [("kind", self.kind), ("id", &self.id), ("msg", &self.msg)]
    }
}

/// The JSON body: `[{"kind":...,"id":...,"msg":...}, ...]`.
pub fn to_json(trace: &[TraceError]) -> String {
    // Written by hand to keep octez's field order (kind, id, msg).
    let items: Vec<String> = trace
        .iter()
        .map(|e| {
            let fields: Vec<String> = e
                .fields()
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}:{}",
                        serde_json::Value::from(*k),
                        serde_json::Value::from(*v)
                    )
                })
                .collect();
            format!("{{{}}}", fields.join(","))
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// A BSON document of string fields (little-endian lengths, as BSON has).
fn bson_document(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.push(0x02); // string element
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(&(value.len() as u32 + 1).to_le_bytes());
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut doc = ((body.len() + 4) as u32).to_le_bytes().to_vec();
    doc.extend_from_slice(&body);
    doc
}

/// The binary trace of the socket protocol.
pub fn to_binary(trace: &[TraceError]) -> Vec<u8> {
    let mut items = Vec::new();
    for e in trace {
        // Names and messages never hold a NUL: BSON strings are C strings.
        let fields = e.fields().map(|(k, v)| (k, v));
        let clean: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.replace('\0', " "), v.replace('\0', " ")))
            .collect();
        let refs: Vec<(&str, &str)> = clean
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let doc = bson_document(&refs);
        items.extend_from_slice(&(doc.len() as u32).to_be_bytes());
        items.extend_from_slice(&doc);
    }
    let mut out = (items.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&items);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_trace_is_octez_shaped() {
        assert_eq!(
            to_json(&[TraceError::failure("magic byte 0x03 not allowed")]),
            r#"[{"kind":"temporary","id":"failure","msg":"magic byte 0x03 not allowed"}]"#
        );
    }

    #[test]
    fn binary_trace_vector() {
        let bytes = to_binary(&[TraceError::failure("no")]);
        // document: int32 size, 3 string elements, terminator
        let mut doc = Vec::new();
        doc.extend_from_slice(b"\x02kind\x00\x0a\x00\x00\x00temporary\x00");
        doc.extend_from_slice(b"\x02id\x00\x08\x00\x00\x00failure\x00");
        doc.extend_from_slice(b"\x02msg\x00\x03\x00\x00\x00no\x00");
        doc.push(0);
        let mut full = ((doc.len() + 4) as u32).to_le_bytes().to_vec();
        full.extend_from_slice(&doc);
        let mut expected = ((full.len() + 4) as u32).to_be_bytes().to_vec();
        expected.extend_from_slice(&(full.len() as u32).to_be_bytes());
        expected.extend_from_slice(&full);
        assert_eq!(bytes, expected);
        assert_eq!(&bytes[..4], &[0, 0, 0, 57]);
        assert_eq!(to_binary(&[]), vec![0, 0, 0, 0]);
    }
}
