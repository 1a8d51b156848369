//! "Did you mean": the closest known name to a misspelt one.

/// Edit distance between two strings (insertions, deletions, substitutions), by characters.
pub fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The candidate closest to `wanted`, if it is close enough to be a likely typo: at most a third
/// of the longer name's characters differ (and at least one edit is always allowed). A candidate
/// that differs only in case always qualifies.
pub fn closest<'a, I>(wanted: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let wanted_lower = wanted.to_lowercase();
    candidates
        .into_iter()
        .filter(|c| *c != wanted)
        .map(|c| {
            let d = if c.to_lowercase() == wanted_lower {
                0
            } else {
                distance(wanted, c)
            };
            (d, c)
        })
        .filter(|(d, c)| *d <= (wanted.chars().count().max(c.chars().count()) / 3).max(1))
        .min_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(b.1)))
        .map(|(_, c)| c)
}

/// `` "; did you mean `x`?" `` when a close candidate exists, else an empty string: ready to
/// append to a message.
pub fn hint<'a, I>(wanted: &str, candidates: I) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    closest(wanted, candidates)
        .map(|c| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

/// `` `a`, `b`, `c` `` (or `nothing` for an empty list), for "expected one of" messages.
pub fn list<I, S>(items: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let items: Vec<String> = items
        .into_iter()
        .map(|s| format!("`{}`", s.as_ref()))
        .collect();
    if items.is_empty() {
        "nothing".into()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("logits", "logits"), 0);
    }

    #[test]
    fn suggests_only_close_names() {
        let names = ["logits", "probs", "labels"];
        assert_eq!(closest("logit", names), Some("logits"));
        assert_eq!(closest("Labels", names), Some("labels"));
        assert_eq!(closest("images", names), None);
        assert_eq!(hint("prob", names), "; did you mean `probs`?");
        assert_eq!(hint("zzz", names), "");
        assert_eq!(list(["a", "b"]), "`a`, `b`");
        assert_eq!(list(Vec::<&str>::new()), "nothing");
    }
}
