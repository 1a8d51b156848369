//! Building a nest from values placed at paths (`unflatten`, key routing).

use super::*;

/// Builds a nest from values placed at segment paths; used by `unflatten` and by key routing.
#[derive(Default)]
pub(crate) enum Builder<B: Backend> {
    #[default]
    Empty,
    Value(Nest<B>),
    Branch(BTreeMap<Segment, Builder<B>>),
}

impl<B: Backend> Builder<B> {
    /// Places `value` at `segments`; a map or list already there is opened up so both merge.
    /// `key` is the flat key, for the error message.
    pub(crate) fn insert(
        &mut self,
        segments: &[Segment],
        value: Nest<B>,
        key: &str,
    ) -> Result<(), NestError> {
        let Some((first, rest)) = segments.split_first() else {
            return self.place(value, key);
        };
        self.open(key)?;
        let Builder::Branch(children) = self else {
            unreachable!("open turns the slot into a branch")
        };
        children
            .entry(first.clone())
            .or_default()
            .insert(rest, value, key)
    }

    fn place(&mut self, value: Nest<B>, key: &str) -> Result<(), NestError> {
        match self {
            Builder::Empty => {
                *self = Builder::Value(value);
                Ok(())
            }
            // A later value for the same flat key replaces the earlier one, as a flat map would.
            Builder::Value(existing) if existing.is_leaf() && value.is_leaf() => {
                *self = Builder::Value(value);
                Ok(())
            }
            _ if value.is_leaf() => Err(NestError::Conflict { path: key.into() }),
            _ => {
                // Merge a container into what is here, child by child.
                match value {
                    Nest::Map(m) => {
                        for (k, v) in m {
                            self.insert(&[Segment::Name(k)], v, key)?;
                        }
                    }
                    Nest::List(l) => {
                        for (i, v) in l.into_iter().enumerate() {
                            self.insert(&[Segment::Index(i)], v, key)?;
                        }
                    }
                    _ => unreachable!("non-leaf values are maps or lists"),
                }
                Ok(())
            }
        }
    }

    /// Turns the slot into a branch, opening up a map or list that was placed whole.
    fn open(&mut self, key: &str) -> Result<(), NestError> {
        match std::mem::replace(self, Builder::Empty) {
            Builder::Empty => *self = Builder::Branch(BTreeMap::new()),
            Builder::Branch(b) => *self = Builder::Branch(b),
            Builder::Value(Nest::Map(m)) => {
                *self = Builder::Branch(
                    m.into_iter()
                        .map(|(k, v)| (Segment::Name(k), Builder::Value(v)))
                        .collect(),
                )
            }
            Builder::Value(Nest::List(l)) => {
                *self = Builder::Branch(
                    l.into_iter()
                        .enumerate()
                        .map(|(i, v)| (Segment::Index(i), Builder::Value(v)))
                        .collect(),
                )
            }
            Builder::Value(leaf) => {
                *self = Builder::Value(leaf);
                return Err(NestError::Conflict { path: key.into() });
            }
        }
        Ok(())
    }

    /// The finished value: branches whose keys are all indices become compacted lists.
    pub(crate) fn finish(self) -> Nest<B> {
        match self {
            Builder::Empty => Nest::map(),
            Builder::Value(v) => v,
            Builder::Branch(children) => {
                if !children.is_empty() && children.keys().all(|k| matches!(k, Segment::Index(_))) {
                    // BTreeMap orders indices numerically, so the list keeps their order.
                    Nest::List(children.into_values().map(Builder::finish).collect())
                } else {
                    Nest::Map(
                        children
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v.finish()))
                            .collect(),
                    )
                }
            }
        }
    }
}
