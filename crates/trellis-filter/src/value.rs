//! The value model a filter is evaluated against: [`Field`], what one selector reads from an
//! entry, and [`Selectable`], implemented by the server's own (borrowed) structs so that no
//! intermediate tree is built per entry.

/// What a selector path reads from an entry. Borrowed wherever possible.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<'a> {
    /// Not there: a map key the map does not have, or a field this entry type does not carry
    /// (it then reads as its type's zero value: `""`, `0`, `false`, empty).
    Missing,
    /// A string field.
    Str(&'a str),
    /// A string field computed on the fly.
    String(String),
    /// A boolean field.
    Bool(bool),
    /// An integer field (ports, weights).
    Int(i64),
    /// A list of strings (`Tags`).
    List(Vec<&'a str>),
    /// A map, by its keys (`Meta`, `TaggedAddresses`): `in` tests a key, `is empty` the size.
    Map(Vec<&'a str>),
    /// A list of objects (`Checks`): for each element, what the rest of the path reads from
    /// it. For the list itself (`Checks is empty`) only the number of elements matters.
    Each(Vec<Field<'a>>),
}

impl<'a> Field<'a> {
    /// A list of strings from anything that yields string slices (`&Vec<String>`, ...).
    pub fn list<I, S>(items: I) -> Self
    where
        I: IntoIterator<Item = &'a S>,
        S: AsRef<str> + ?Sized + 'a,
    {
        Field::List(items.into_iter().map(AsRef::as_ref).collect())
    }

    /// A map from its keys (`map.keys()`).
    pub fn keys<I, S>(keys: I) -> Self
    where
        I: IntoIterator<Item = &'a S>,
        S: AsRef<str> + ?Sized + 'a,
    {
        Field::Map(keys.into_iter().map(AsRef::as_ref).collect())
    }

    /// A list of objects: one `Field` per element (`checks.iter().map(|c| c.select(rest))`).
    pub fn each<I>(items: I) -> Self
    where
        I: IntoIterator<Item = Field<'a>>,
    {
        Field::Each(items.into_iter().collect())
    }

    /// A map value: the string when the key is present, [`Field::Missing`] when it is not.
    pub fn lookup<S>(value: Option<&'a S>) -> Self
    where
        S: AsRef<str> + ?Sized + 'a,
    {
        value.map_or(Field::Missing, |v| Field::Str(v.as_ref()))
    }
}

impl<'a> From<&'a str> for Field<'a> {
    fn from(s: &'a str) -> Self {
        Field::Str(s)
    }
}

impl<'a> From<&'a String> for Field<'a> {
    fn from(s: &'a String) -> Self {
        Field::Str(s)
    }
}

impl From<String> for Field<'_> {
    fn from(s: String) -> Self {
        Field::String(s)
    }
}

impl From<bool> for Field<'_> {
    fn from(b: bool) -> Self {
        Field::Bool(b)
    }
}

macro_rules! int_fields {
    ($($t:ty),*) => {$(
        impl From<$t> for Field<'_> {
            fn from(n: $t) -> Self {
                Field::Int(i64::from(n))
            }
        }
    )*};
}
int_fields!(i8, i16, i32, i64, u8, u16, u32);

impl From<u64> for Field<'_> {
    /// Saturates at `i64::MAX` (Go's `int` is 64-bit signed).
    fn from(n: u64) -> Self {
        Field::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl From<usize> for Field<'_> {
    fn from(n: usize) -> Self {
        Field::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

/// An entry a filter can be evaluated against.
///
/// `select` gets the whole selector path, map keys included (`["Service", "Meta", "env"]`
/// for both `Service.Meta.env` and `Service.Meta["env"]`), and answers what it reads. Only
/// paths valid for the endpoint's [`Schema`](crate::Schema) are asked; a path the
/// implementation does not know can answer [`Field::Missing`], which reads as the zero value.
///
/// ```
/// use trellis_filter::{Field, Selectable};
///
/// struct Check { status: String, tags: Vec<String> }
/// struct Entry { service: String, meta: std::collections::BTreeMap<String, String>, checks: Vec<Check> }
///
/// impl Selectable for Check {
///     fn select(&self, path: &[&str]) -> Field<'_> {
///         match path {
///             ["Status"] => Field::from(&self.status),
///             ["ServiceTags"] => Field::list(&self.tags),
///             _ => Field::Missing,
///         }
///     }
/// }
///
/// impl Selectable for Entry {
///     fn select(&self, path: &[&str]) -> Field<'_> {
///         match path {
///             ["Service", "Service"] => Field::from(&self.service),
///             ["Service", "Meta"] => Field::keys(self.meta.keys()),
///             ["Service", "Meta", key] => Field::lookup(self.meta.get(*key)),
///             ["Checks", rest @ ..] => Field::each(self.checks.iter().map(|c| c.select(rest))),
///             _ => Field::Missing,
///         }
///     }
/// }
/// ```
pub trait Selectable {
    /// What `path` reads from this entry.
    fn select(&self, path: &[&str]) -> Field<'_>;
}

impl<T: Selectable + ?Sized> Selectable for &T {
    fn select(&self, path: &[&str]) -> Field<'_> {
        (**self).select(path)
    }
}

impl<T: Selectable + ?Sized> Selectable for Box<T> {
    fn select(&self, path: &[&str]) -> Field<'_> {
        (**self).select(path)
    }
}

impl<T: Selectable + ?Sized> Selectable for std::sync::Arc<T> {
    fn select(&self, path: &[&str]) -> Field<'_> {
        (**self).select(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn constructors() {
        let tags = vec!["a".to_string(), "b".to_string()];
        assert_eq!(Field::list(&tags), Field::List(vec!["a", "b"]));
        let strs: [&str; 1] = ["x"];
        assert_eq!(Field::list(strs.iter().copied()), Field::List(vec!["x"]));
        let meta = BTreeMap::from([("k".to_string(), "v".to_string())]);
        assert_eq!(Field::keys(meta.keys()), Field::Map(vec!["k"]));
        assert_eq!(Field::lookup(meta.get("k")), Field::Str("v"));
        assert_eq!(Field::lookup(meta.get("nope")), Field::Missing);
        assert_eq!(Field::from(8080u16), Field::Int(8080));
        assert_eq!(Field::from(u64::MAX), Field::Int(i64::MAX));
        assert_eq!(
            Field::each([Field::Bool(true), Field::Missing]),
            Field::Each(vec![Field::Bool(true), Field::Missing])
        );
    }
}
