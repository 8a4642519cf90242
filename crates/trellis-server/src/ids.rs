//! Fresh random identifiers the server hands out: session IDs, user event IDs, transaction gids,
//! ACL accessor IDs, policy IDs and secrets.

/// A random (version 4) UUID, hyphenated, as Consul's session and event IDs are.
pub fn random_uuid() -> String {
    uuid::Builder::from_random_bytes(rand::random::<[u8; 16]>())
        .into_uuid()
        .hyphenated()
        .to_string()
}
