//! Routing plans: each inbound node's rules compiled once, the keys a nucleotide takes, and the routing of values at run time.

use super::*;

/// One inbound node's part of a routing plan.
#[derive(Debug, Clone)]
pub struct InboundRoute {
    /// The inbound node's name.
    pub node: String,
    rules: NodeRules,
}

/// A nucleotide's compiled input routing: per inbound node the rules, plus the keys the
/// nucleotide takes (`None` when it takes any key).
#[derive(Debug, Clone)]
pub struct RoutePlan {
    inbound: Vec<InboundRoute>,
    accept: Option<HashSet<String>>,
}

impl RoutePlan {
    /// Compiles the mapping for `inbound` nodes (in that order). `accept` lists the top-level
    /// incoming keys the nucleotide takes; others are dropped (`None` keeps all).
    /// Rules for nodes that are not inbound are not checked here: the DNA helix reports them.
    pub fn compile(
        inbound: &[String],
        mapping: &KeysMapping,
        accept: Option<HashSet<String>>,
    ) -> Result<RoutePlan, Vec<MappingError>> {
        let mut errors = Vec::new();
        let default_wildcard = match &mapping.all_nodes {
            Some(t) => match parse_target(t) {
                Ok(t) => Some(t),
                Err(reason) => {
                    errors.push(MappingError::BadRule {
                        node: WILDCARD.into(),
                        key: WILDCARD.into(),
                        target: t.clone(),
                        reason,
                    });
                    None
                }
            },
            None => None,
        };
        let mut routes = Vec::with_capacity(inbound.len());
        for node in inbound {
            match NodeRules::compile(node, mapping.rules_for(node)) {
                Ok(mut rules) => {
                    if let Some(t) = &default_wildcard {
                        rules.add_default_wildcard(t);
                    }
                    routes.push(InboundRoute {
                        node: node.clone(),
                        rules,
                    });
                }
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() {
            Ok(RoutePlan {
                inbound: routes,
                accept,
            })
        } else {
            Err(errors)
        }
    }

    /// The inbound nodes, in order.
    pub fn inbound(&self) -> impl Iterator<Item = &str> {
        self.inbound.iter().map(|r| r.node.as_str())
    }

    /// Routes the outputs of the inbound nodes (in plan order) into the nucleotide's input.
    /// Returns `None` when any inbound output is absent: the nucleotide is skipped.
    pub fn route<B: Backend>(
        &self,
        outputs: &[Option<&Nest<B>>],
    ) -> Result<Option<Nest<B>>, MappingError> {
        debug_assert_eq!(outputs.len(), self.inbound.len());
        if outputs.iter().any(Option::is_none) {
            return Ok(None);
        }
        let mut remapped = Vec::with_capacity(outputs.len());
        for (route, output) in self.inbound.iter().zip(outputs.iter().flatten()) {
            remapped.push((route.node.as_str(), self.remap(route, output)?));
        }
        if remapped.len() == 1 {
            return Ok(remapped.pop().map(|(_, n)| n));
        }
        collapse(remapped).map(Some)
    }

    fn remap<B: Backend>(
        &self,
        route: &InboundRoute,
        output: &Nest<B>,
    ) -> Result<Nest<B>, MappingError> {
        let rules = &route.rules;
        if rules.is_empty() && self.accept.is_none() {
            return Ok(output.clone());
        }
        let mut builder = Builder::default();
        let mut path = Vec::new();
        let position = Position::start(rules);
        let result = match output {
            Nest::Map(m) => m.iter().try_for_each(|(k, v)| {
                path.push(Segment::Name(k.clone()));
                let child = position.descend(rules, rules.child_by_name(ROOT, k), 1);
                let r = self.walk(rules, v, &mut path, child, &mut builder);
                path.pop();
                r
            }),
            // A nucleotide's output is a map; anything else passes through whole.
            other => self.emit(position, other, &path, &mut builder),
        };
        result.map_err(|source| MappingError::Nest {
            node: route.node.clone(),
            source,
        })?;
        Ok(builder.finish())
    }

    fn walk<B: Backend>(
        &self,
        rules: &NodeRules,
        value: &Nest<B>,
        path: &mut Vec<Segment>,
        position: Position<'_>,
        builder: &mut Builder<B>,
    ) -> Result<(), NestError> {
        if value.is_leaf() || position.settled(rules) {
            return self.emit(position, value, path, builder);
        }
        let depth = path.len() + 1;
        match value {
            Nest::Map(m) => {
                for (k, v) in m {
                    let child = position.cursor.and_then(|c| rules.child_by_name(c, k));
                    path.push(Segment::Name(k.clone()));
                    let r = self.walk(
                        rules,
                        v,
                        path,
                        position.descend(rules, child, depth),
                        builder,
                    );
                    path.pop();
                    r?;
                }
            }
            Nest::List(l) => {
                for (i, v) in l.iter().enumerate() {
                    let child = position.cursor.and_then(|c| rules.child_by_index(c, i));
                    path.push(Segment::Index(i));
                    let r = self.walk(
                        rules,
                        v,
                        path,
                        position.descend(rules, child, depth),
                        builder,
                    );
                    path.pop();
                    r?;
                }
            }
            _ => unreachable!("leaves were handled above"),
        }
        Ok(())
    }

    fn emit<B: Backend>(
        &self,
        position: Position<'_>,
        value: &Nest<B>,
        path: &[Segment],
        builder: &mut Builder<B>,
    ) -> Result<(), NestError> {
        if position.overflow {
            return Err(NestError::Conflict {
                path: format!(
                    "{} (more than {MAX_FIRED} mapping rules match levels of this key; merge some of them)",
                    join_segments(path)
                ),
            });
        }
        let mut result = Ok(());
        position.resolve(|prefix, depth| {
            if result.is_err() {
                return;
            }
            let rest = &path[depth..];
            if let Some(accept) = &self.accept {
                let first = prefix.first().or(rest.first());
                if !matches!(first, Some(Segment::Name(n)) if accept.contains(n)) {
                    return;
                }
            }
            let mut target = Vec::with_capacity(prefix.len() + rest.len());
            target.extend_from_slice(prefix);
            target.extend_from_slice(rest);
            result = builder.insert(&target, value.clone(), &join_segments(&target));
        });
        result
    }

    /// The keys each inbound node's declared generated keys become after mapping, for checks
    /// before any value exists: `(generated key, mapped key)`. A declared key that rules reach
    /// inside (such as a list with a rule for `key:2`) also yields every target of those deeper
    /// rules, since its content is not known in advance.
    pub fn static_keys<'a>(
        &self,
        inbound_index: usize,
        generated: impl IntoIterator<Item = &'a str>,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for key in generated {
            self.for_each_static_key(inbound_index, key, &mut |mapped| {
                out.push((key.to_owned(), mapped.to_string()));
            });
        }
        out
    }

    /// Calls `emit` with each key that the declared generated key `key` of inbound node
    /// `inbound_index` becomes after mapping (see [`RoutePlan::static_keys`]); allocates
    /// nothing for keys of up to eight levels.
    pub fn for_each_static_key(
        &self,
        inbound_index: usize,
        key: &str,
        emit: &mut dyn FnMut(MappedKey<'_>),
    ) {
        let rules = &self.inbound[inbound_index].rules;
        let mut stack = [""; MAX_FIRED];
        let heap: Vec<&str>;
        let levels: &[&str] = if key.split(SEPARATOR).count() <= MAX_FIRED {
            let mut n = 0;
            for level in key.split(SEPARATOR) {
                stack[n] = level;
                n += 1;
            }
            &stack[..n]
        } else {
            heap = key.split(SEPARATOR).collect();
            &heap
        };
        let mut position = Position::start(rules);
        for (i, level) in levels.iter().enumerate() {
            let child = position.cursor.and_then(|c| rules.child_by_name(c, level));
            position = position.descend(rules, child, i + 1);
        }
        position.resolve(|prefix, depth| {
            emit(MappedKey {
                prefix,
                rest: &levels[depth..],
            })
        });
        if let Some(c) = position.cursor {
            if let Some(Target::To(t)) = &rules.nodes[c].wildcard {
                emit(MappedKey {
                    prefix: t,
                    rest: &[],
                });
            }
            rules.deeper_targets(c, &mut |t| {
                emit(MappedKey {
                    prefix: t,
                    rest: &[],
                })
            });
        }
    }
}

/// A key after mapping, before it is joined into a string: the rule's target levels followed by
/// the levels of the original key below the matched prefix.
#[derive(Debug, Clone, Copy)]
pub struct MappedKey<'a> {
    /// Levels from a rule's target.
    pub prefix: &'a [Segment],
    /// Levels kept from the original key.
    pub rest: &'a [&'a str],
}

impl fmt::Display for MappedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let prefix = self.prefix.iter().map(Level::Segment);
        for level in prefix.chain(self.rest.iter().map(|l| Level::Text(l))) {
            if !first {
                write!(f, "{SEPARATOR}")?;
            }
            first = false;
            match level {
                Level::Segment(s) => write!(f, "{s}")?,
                Level::Text(t) => f.write_str(t)?,
            }
        }
        Ok(())
    }
}

enum Level<'a> {
    Segment(&'a Segment),
    Text(&'a str),
}

impl NodeRules {
    /// Every non-drop target of rules strictly below trie node `at`.
    fn deeper_targets<'r>(&'r self, at: usize, emit: &mut dyn FnMut(&'r [Segment])) {
        for (_, child) in &self.nodes[at].children {
            let node = &self.nodes[*child];
            for t in [&node.explicit, &node.wildcard].into_iter().flatten() {
                if let Target::To(s) = t {
                    emit(s);
                }
            }
            self.deeper_targets(*child, emit);
        }
    }
}
