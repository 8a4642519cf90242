//! Network coordinates: `/v1/coordinate/datacenters`, `/v1/coordinate/nodes`,
//! `/v1/coordinate/node/{node}` and `PUT /v1/coordinate/update`. This server is the only node and
//! the only server of its datacenter, and it measures no round trips: its WAN coordinate (and
//! `/v1/agent/self`'s `Coord`) is Serf's starting coordinate, the origin, and never changes. Its
//! LAN coordinate in the catalog starts there too and is what `/v1/coordinate/update` last set,
//! per segment (memory-only). LAN reads answer the coordinates index (1 until the first change)
//! and block on it.

use super::blocking::block_on;
use super::error::ApiError;
use super::params::QueryParams;
use super::respond::{json_response, to_json_bytes};
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value, json};

/// Serf's coordinates have this many dimensions; an update with another number is refused, as
/// Consul refuses an incompatible coordinate.
const DIMENSIONS: usize = 8;

/// The WAN coordinates' index: they never change.
const WAN_INDEX: u64 = 1;

/// `GET /v1/coordinate/datacenters`: the WAN area with this server (named `node.dc` on the WAN,
/// as Consul's servers are).
pub async fn datacenters(
    State(state): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    let node = state.node();
    let body = json!([{
        "Datacenter": node.datacenter,
        "AreaID": "wan",
        "Coordinates": [{
            "Node": format!("{}.{}", node.name, node.datacenter),
            "Segment": "",
            "Coord": node.coordinate(),
        }],
    }]);
    Ok(json_response(WAN_INDEX, to_json_bytes(&body)))
}

/// `GET /v1/coordinate/nodes[?segment=][&index=&wait=]`: the LAN coordinates of the datacenter.
pub async fn nodes(
    State(state): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    let (index, listed) = lan_coordinates(&state, &query).await?;
    Ok(json_response(index, to_json_bytes(&listed)))
}

/// `GET /v1/coordinate/node/{node}[?segment=]`: that node's LAN coordinates; 404 for a node
/// without one (every node but this server's).
pub async fn node(
    State(state): State<AppState>,
    Path(node): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    if !node.eq_ignore_ascii_case(&state.node().name) {
        return Err(ApiError::not_found(format!(
            "no coordinate for node {node:?}"
        )));
    }
    let (index, listed) = lan_coordinates(&state, &query).await?;
    if listed.is_empty() {
        return Err(ApiError::not_found(format!(
            "no coordinate for node {node:?}"
        )));
    }
    Ok(json_response(index, to_json_bytes(&listed)))
}

/// `GET /v1/coordinate/node/` without a node.
pub async fn missing_node() -> ApiError {
    ApiError::bad_request("Missing node name")
}

/// This server's LAN coordinates (after a blocking wait on their index), only the segment
/// `?segment=` names when it is given (the default segment is "").
async fn lan_coordinates(
    state: &AppState,
    query: &QueryParams,
) -> Result<(u64, Vec<Value>), ApiError> {
    block_on(state, state.coordinates_changed(), query.blocking()?, |i| {
        *i
    })
    .await?;
    let (index, coordinates) = state.coordinates();
    let wanted = query.get("segment");
    let listed = coordinates
        .into_iter()
        .filter(|(segment, _)| wanted.is_none_or(|w| w == segment))
        .map(|(segment, coord)| {
            json!({"Node": state.node().name, "Segment": segment, "Coord": coord})
        })
        .collect();
    Ok((index, listed))
}

/// `PUT /v1/coordinate/update`: a node's LAN coordinate (`{"Node", "Segment", "Coord"}`, keys in
/// any case, as Go decodes them). This node's is kept at once (Consul batches them every few
/// seconds); one for a node the catalog does not have is dropped and answered 200, as Consul
/// drops it. A coordinate with the wrong number of dimensions is Consul's 500.
pub async fn update(
    State(state): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let query = QueryParams::new(q);
    query.check_common(state.node())?;
    let request = parse_update(&body)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    // The query's `dc` wins over the body's, as Consul's parseDC has it.
    if query.get("dc").is_none_or(str::is_empty)
        && !request.datacenter.is_empty()
        && request.datacenter != state.node().datacenter
    {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("No path to datacenter {:?}", request.datacenter),
        ));
    }
    let coord = request
        .coord
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "invalid coordinate"))?;
    if coord.vec.len() != DIMENSIONS {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "incompatible coordinate",
        ));
    }
    if request.node.eq_ignore_ascii_case(&state.node().name) {
        state.set_coordinate(request.segment, coord.to_json());
    }
    Ok(StatusCode::OK.into_response())
}

/// A `structs.CoordinateUpdateRequest`.
#[derive(Debug, Default)]
struct UpdateRequest {
    datacenter: String,
    node: String,
    segment: String,
    coord: Option<Coordinate>,
}

/// Serf's `coordinate.Coordinate`.
#[derive(Debug, Default)]
struct Coordinate {
    vec: Vec<f64>,
    error: f64,
    adjustment: f64,
    height: f64,
}

impl Coordinate {
    fn to_json(&self) -> Value {
        json!({
            "Vec": self.vec,
            "Error": self.error,
            "Adjustment": self.adjustment,
            "Height": self.height,
        })
    }
}

/// The JSON type name Go's decoder reports a mismatch with.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn mismatch(value: &Value, field: &str, go: &str) -> String {
    format!(
        "json: cannot unmarshal {} into Go struct field {field} of type {go}",
        json_kind(value)
    )
}

/// Go's `encoding/json` on a `CoordinateUpdateRequest`: keys matched without regard to case,
/// unknown keys ignored, `null` leaves a field unset.
fn parse_update(body: &[u8]) -> Result<UpdateRequest, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("EOF".into());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let map = match value {
        Value::Object(map) => map,
        Value::Null => return Ok(UpdateRequest::default()),
        other => {
            return Err(format!(
                "json: cannot unmarshal {} into Go value of type structs.CoordinateUpdateRequest",
                json_kind(&other)
            ));
        }
    };
    let mut request = UpdateRequest::default();
    let text = |map: &Map<String, Value>, name: &str| -> Result<String, String> {
        match field(map, name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(mismatch(
                other,
                &format!("CoordinateUpdateRequest.{name}"),
                "string",
            )),
        }
    };
    request.datacenter = text(&map, "Datacenter")?;
    request.node = text(&map, "Node")?;
    request.segment = text(&map, "Segment")?;
    request.coord = match field(&map, "Coord") {
        None | Some(Value::Null) => None,
        Some(Value::Object(coord)) => Some(parse_coordinate(coord)?),
        Some(other) => {
            return Err(mismatch(
                other,
                "CoordinateUpdateRequest.Coord",
                "coordinate.Coordinate",
            ));
        }
    };
    Ok(request)
}

fn parse_coordinate(map: &Map<String, Value>) -> Result<Coordinate, String> {
    let number = |name: &str| -> Result<f64, String> {
        match field(map, name) {
            None | Some(Value::Null) => Ok(0.0),
            Some(Value::Number(n)) => Ok(n.as_f64().unwrap_or(0.0)),
            Some(other) => Err(mismatch(
                other,
                &format!("CoordinateUpdateRequest.Coord.{name}"),
                "float64",
            )),
        }
    };
    let vec = match field(map, "Vec") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::Number(n) => Ok(n.as_f64().unwrap_or(0.0)),
                Value::Null => Ok(0.0),
                other => Err(mismatch(
                    other,
                    "CoordinateUpdateRequest.Coord.Vec",
                    "float64",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(mismatch(
                other,
                "CoordinateUpdateRequest.Coord.Vec",
                "[]float64",
            ));
        }
    };
    Ok(Coordinate {
        vec,
        error: number("Error")?,
        adjustment: number("Adjustment")?,
        height: number("Height")?,
    })
}

/// A key as Go's decoder finds it: the exact name, else any case.
fn field<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    map.get(name).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_bodies_decode_as_go_decodes_them() {
        let r = parse_update(
            br#"{"node": "n1", "SEGMENT": "", "Coord": {"vec": [1, 2, 3, 4, 5, 6, 7, 8], "Height": 0.5}, "Other": 1}"#,
        )
        .unwrap();
        assert_eq!((r.node.as_str(), r.segment.as_str()), ("n1", ""));
        let coord = r.coord.unwrap();
        assert_eq!(coord.vec.len(), 8);
        assert_eq!(coord.height, 0.5);
        assert_eq!(parse_update(b"").unwrap_err(), "EOF");
        assert_eq!(
            parse_update(br#"{"Node": 5}"#).unwrap_err(),
            "json: cannot unmarshal number into Go struct field CoordinateUpdateRequest.Node of type string"
        );
        assert!(parse_update(br#"{"Coord": {"Vec": ["x"]}}"#).is_err());
    }
}
