//! The DNA helix: nucleotides wired by their inbound nodes and key mappings into a directed
//! graph, validated and sorted before any tensor exists.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt::Write;

use crate::nest::SEPARATOR;

use crate::diagnostic::{Code, Diagnostic, Diagnostics};
use crate::gene::Kind;
use crate::keys::{KeySpec, Signature, ValueKind};
use crate::mapping::{KeysMapping, RoutePlan};
use crate::suggest;

/// What the helix needs to know about one nucleotide, as its config describes it.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The nucleotide's unique name.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// The nodes whose outputs it takes, in order.
    pub inbound_nodes: Vec<String>,
    /// How their keys are renamed for it.
    pub mapping: KeysMapping,
    /// Its keys.
    pub signature: Signature,
    /// The config file it came from, for messages.
    pub file: Option<String>,
}

impl NodeSpec {
    /// A nucleotide without inbound nodes or mapping.
    pub fn new(name: impl Into<String>, kind: Kind, signature: Signature) -> Self {
        NodeSpec {
            name: name.into(),
            kind,
            inbound_nodes: Vec::new(),
            mapping: KeysMapping::default(),
            signature,
            file: None,
        }
    }

    /// Sets the inbound nodes.
    pub fn inbound<I, S>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.inbound_nodes = nodes.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the key mapping.
    pub fn mapping(mut self, mapping: KeysMapping) -> Self {
        self.mapping = mapping;
        self
    }

    /// Sets the file it came from.
    pub fn file(mut self, file: impl Into<String>) -> Self {
        self.file = Some(file.into());
        self
    }
}

/// The keys that flow along one edge of a helix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeKeys {
    /// The inbound node's index.
    pub from: usize,
    /// The receiving nucleotide's index.
    pub to: usize,
    /// `(generated key, key after mapping)` pairs.
    pub keys: Vec<(String, String)>,
}

/// One node of a built helix.
#[derive(Debug, Clone)]
pub struct HelixNode {
    /// The description it was built from.
    pub spec: NodeSpec,
    /// Indices of its inbound nodes (into [`Helix::names`]), in order.
    pub inbound: Vec<usize>,
    /// Its compiled input routing.
    pub plan: RoutePlan,
}

/// A validated, sorted graph of nucleotides and the handler inputs they read.
///
/// Indices: the handler's incoming nodes come first (`0..incoming_len()`), then the
/// nucleotides in the order they were given.
#[derive(Debug, Clone)]
pub struct Helix {
    incoming: Vec<NodeSpec>,
    nodes: Vec<HelixNode>,
    index: HashMap<String, usize>,
    order: Vec<usize>,
    warnings: Diagnostics,
}

impl Helix {
    /// Builds and validates the helix of `nodes`, which may read `incoming` (the handler's
    /// inputs: dataset, data feeder, model outputs, ...). Every problem is reported at once.
    pub fn build(incoming: Vec<NodeSpec>, nodes: Vec<NodeSpec>) -> Result<Helix, Diagnostics> {
        Builder::new(incoming, nodes).build()
    }

    /// The number of incoming nodes; nucleotides start at this index.
    pub fn incoming_len(&self) -> usize {
        self.incoming.len()
    }

    /// All names: incoming nodes first, then nucleotides.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.incoming
            .iter()
            .map(|s| s.name.as_str())
            .chain(self.nodes.iter().map(|n| n.spec.name.as_str()))
    }

    /// The name at an index.
    pub fn name(&self, index: usize) -> &str {
        &self.spec(index).name
    }

    /// The description at an index.
    pub fn spec(&self, index: usize) -> &NodeSpec {
        match index.checked_sub(self.incoming.len()) {
            Some(i) => &self.nodes[i].spec,
            None => &self.incoming[index],
        }
    }

    /// The index of a name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The nucleotide at an index (`None` for incoming nodes).
    pub fn node(&self, index: usize) -> Option<&HelixNode> {
        index
            .checked_sub(self.incoming.len())
            .and_then(|i| self.nodes.get(i))
    }

    /// Nucleotide indices in run order: source nucleotides (no inbound nodes) sorted by name
    /// first, then the rest in Kahn order, the smallest name first among the ready ones.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// Nucleotide names in run order.
    pub fn order_names(&self) -> Vec<&str> {
        self.order.iter().map(|i| self.name(*i)).collect()
    }

    /// Warnings found while building (missing optional keys, ...).
    pub fn warnings(&self) -> &Diagnostics {
        &self.warnings
    }

    /// Reorders execution: stable sort of the topological order by `key(kind)`. Used by gene
    /// handlers to run gene after gene. Returns the edges that would then run backwards as
    /// `(from, to)` indices; the order is left unchanged when there are any.
    pub fn order_by_gene(&mut self, key: impl Fn(Kind) -> usize) -> Vec<(usize, usize)> {
        let mut order = self.order.clone();
        order.sort_by_key(|i| key(self.spec(*i).kind));
        let mut position = vec![usize::MAX; self.incoming.len() + self.nodes.len()];
        for (p, i) in order.iter().enumerate() {
            position[*i] = p;
        }
        let mut backwards = Vec::new();
        for &i in &order {
            for &from in &self.node(i).expect("order holds nucleotides").inbound {
                if from >= self.incoming.len() && position[from] > position[i] {
                    backwards.push((from, i));
                }
            }
        }
        if backwards.is_empty() {
            self.order = order;
        }
        backwards
    }

    /// The keys that flow along each edge, keeping only keys the receiving nucleotide takes.
    pub fn edge_keys(&self) -> Vec<EdgeKeys> {
        let mut edges = Vec::new();
        for &to in &self.order {
            let node = self.node(to).expect("order holds nucleotides");
            let sig = &node.spec.signature;
            for (slot, &from) in node.inbound.iter().enumerate() {
                let generated = self.spec(from).signature.generated.iter();
                let keys = node
                    .plan
                    .static_keys(slot, generated.map(|k| k.name.as_ref()))
                    .into_iter()
                    .filter(|(_, mapped)| sig.takes(top_level(mapped)))
                    .collect();
                edges.push(EdgeKeys { from, to, keys });
            }
        }
        edges
    }

    /// The helix as a Graphviz DOT graph: nucleotides coloured by kind, incoming nodes grey,
    /// edges labelled with the keys that flow along them.
    pub fn to_dot(&self) -> String {
        let mut dot = String::from(
            "digraph helix {\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\", fontsize=10];\n",
        );
        for spec in &self.incoming {
            let _ = writeln!(
                dot,
                "  \"{}\" [label=\"{}\\n(input)\", fillcolor=\"#dddddd\", shape=cds];",
                escape(&spec.name),
                escape(&spec.name)
            );
        }
        for &i in &self.order {
            let spec = self.spec(i);
            let _ = writeln!(
                dot,
                "  \"{}\" [label=\"{}\\n{}\", fillcolor=\"{}\"];",
                escape(&spec.name),
                escape(&spec.name),
                spec.kind,
                kind_colour(spec.kind)
            );
        }
        for EdgeKeys { from, to, keys } in self.edge_keys() {
            let mut label: Vec<String> = keys
                .iter()
                .map(|(g, m)| {
                    if g == m {
                        escape(g)
                    } else {
                        format!("{} → {}", escape(g), escape(m))
                    }
                })
                .collect();
            if self.spec(from).signature.dynamic_generated {
                label.push("(dynamic keys)".into());
            }
            let _ = writeln!(
                dot,
                "  \"{}\" -> \"{}\" [label=\"{}\"];",
                escape(self.name(from)),
                escape(self.name(to)),
                label.join("\\n")
            );
        }
        dot.push_str("}\n");
        dot
    }
}

fn top_level(key: &str) -> &str {
    key.split(crate::nest::SEPARATOR).next().unwrap_or(key)
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The fill colour of a kind in DOT drawings.
pub(crate) fn kind_colour(kind: Kind) -> &'static str {
    match kind {
        Kind::ModelPlugin => "#8ecae6",
        Kind::ModelLoss => "#ffb703",
        Kind::ModelPostProcessor => "#a8dadc",
        Kind::ModelSummary => "#cdb4db",
        Kind::ModelMetric => "#b5e48c",
        Kind::Dataset | Kind::DataFeeder => "#e9c46a",
        Kind::DataReader => "#f4a261",
        Kind::DataProcessor => "#f6bd60",
        Kind::CoordinatorCallback => "#ffafcc",
        Kind::KpiPlugin => "#90be6d",
        Kind::KpiAccumulator => "#43aa8b",
    }
}

/// The state of one build: the specs, the name index and what was found so far.
struct Builder {
    incoming: Vec<NodeSpec>,
    specs: Vec<NodeSpec>,
    index: HashMap<String, usize>,
    diagnostics: Diagnostics,
}

impl Builder {
    fn new(incoming: Vec<NodeSpec>, specs: Vec<NodeSpec>) -> Self {
        Builder {
            incoming,
            specs,
            index: HashMap::new(),
            diagnostics: Diagnostics::default(),
        }
    }

    pub(super) fn spec(&self, index: usize) -> &NodeSpec {
        match index.checked_sub(self.incoming.len()) {
            Some(i) => &self.specs[i],
            None => &self.incoming[index],
        }
    }

    fn error(
        &mut self,
        code: Code,
        spec_index: usize,
        message: String,
        help: String,
    ) -> &mut Diagnostic {
        let file = self.spec(spec_index).file.clone();
        let name = self.spec(spec_index).name.clone();
        self.diagnostics
            .push(Diagnostic::error(code, &name, message, help).with_file(file.as_deref()));
        self.diagnostics.0.last_mut().expect("just pushed")
    }

    fn build(mut self) -> Result<Helix, Diagnostics> {
        self.index_names();
        let inbound = self.resolve_inbound();
        self.check_mapped_nodes();
        let plans = self.compile_plans();
        self.check_genes(&inbound);
        let order = self.sort(&inbound);
        self.check_keys(&inbound, &plans);
        self.check_mapping_sources(&inbound);
        self.diagnostics.sort();
        if self.diagnostics.has_errors() {
            return Err(self.diagnostics);
        }
        let nodes = self
            .specs
            .into_iter()
            .zip(inbound)
            .zip(plans)
            .map(|((spec, inbound), plan)| HelixNode {
                spec,
                inbound: inbound.into_iter().flatten().collect(),
                plan: plan.expect("plans compile when there are no errors"),
            })
            .collect();
        Ok(Helix {
            incoming: self.incoming,
            nodes,
            index: self.index,
            order,
            warnings: self.diagnostics,
        })
    }

    /// NC0001: names are unique across the handler's inputs and all genes.
    fn index_names(&mut self) {
        let total = self.incoming.len() + self.specs.len();
        for i in 0..total {
            let name = self.spec(i).name.clone();
            if let Some(&first) = self.index.get(&name) {
                let first_spec = self.spec(first);
                let first_place = match (&first_spec.file, first < self.incoming.len()) {
                    (_, true) => "an input of this handler".to_owned(),
                    (Some(f), false) => format!("a {} in {f}", first_spec.kind),
                    (None, false) => format!("a {}", first_spec.kind),
                };
                self.error(
                    Code::DUPLICATE_NAME,
                    i,
                    format!("nucleotide name `{name}` is used twice; it is also {first_place}"),
                    "give each nucleotide a unique `name`: names must be unique across all genes and the handler's inputs".into(),
                );
            } else {
                self.index.insert(name, i);
            }
        }
    }

    /// NC0002: every inbound node exists. Returns the resolved indices per nucleotide.
    fn resolve_inbound(&mut self) -> Vec<Vec<Option<usize>>> {
        let offset = self.incoming.len();
        let mut all = Vec::with_capacity(self.specs.len());
        for i in 0..self.specs.len() {
            let mut resolved = Vec::with_capacity(self.specs[i].inbound_nodes.len());
            for j in 0..self.specs[i].inbound_nodes.len() {
                let wanted = &self.specs[i].inbound_nodes[j];
                match self.index.get(wanted) {
                    Some(&k) => resolved.push(Some(k)),
                    None => {
                        let wanted = wanted.clone();
                        let hint = suggest::hint(&wanted, self.index.keys().map(String::as_str));
                        let mut known: Vec<&str> = self.index.keys().map(String::as_str).collect();
                        known.sort_unstable();
                        let shown = known.len().min(12);
                        let more = if known.len() > shown { ", ..." } else { "" };
                        let help = format!(
                            "inbound nodes name nucleotides of this handler or its inputs: {}{more}",
                            suggest::list(&known[..shown])
                        );
                        let name = self.specs[i].name.clone();
                        self.error(
                            Code::UNKNOWN_INBOUND,
                            offset + i,
                            format!("unknown inbound node `{wanted}` of nucleotide `{name}`{hint}"),
                            help,
                        );
                        resolved.push(None);
                    }
                }
            }
            all.push(resolved);
        }
        all
    }

    /// NC0005: mapping rules only for inbound nodes.
    fn check_mapped_nodes(&mut self) {
        let offset = self.incoming.len();
        for i in 0..self.specs.len() {
            let spec = &self.specs[i];
            let stray: Vec<String> = spec
                .mapping
                .node_names()
                .filter(|n| !spec.inbound_nodes.iter().any(|x| x == n))
                .map(str::to_owned)
                .collect();
            for node in stray {
                let spec = &self.specs[i];
                let hint = suggest::hint(&node, spec.inbound_nodes.iter().map(String::as_str));
                let message = format!(
                    "`incoming_keys_mapping` of nucleotide `{}` has rules for `{node}`, which is not one of its inbound nodes ({}){hint}",
                    spec.name,
                    suggest::list(&spec.inbound_nodes)
                );
                self.error(
                    Code::MAPPING_NOT_INBOUND,
                    offset + i,
                    message,
                    format!("add `{node}` to `inbound_nodes`, or remove its rules from `incoming_keys_mapping`"),
                );
            }
        }
    }

    /// NC0008: compiles every routing plan.
    fn compile_plans(&mut self) -> Vec<Option<RoutePlan>> {
        let offset = self.incoming.len();
        let mut plans = Vec::with_capacity(self.specs.len());
        for i in 0..self.specs.len() {
            let spec = &self.specs[i];
            let accept = (!spec.signature.dynamic_incoming).then(|| {
                spec.signature
                    .incoming
                    .iter()
                    .map(|k| k.top_level().to_owned())
                    .collect::<HashSet<_>>()
            });
            match RoutePlan::compile(&spec.inbound_nodes, &spec.mapping, accept) {
                Ok(plan) => plans.push(Some(plan)),
                Err(errors) => {
                    let name = spec.name.clone();
                    for e in errors {
                        self.error(
                            Code::BAD_MAPPING,
                            offset + i,
                            format!("in `incoming_keys_mapping` of nucleotide `{name}`: {e}"),
                            "rules map a generated key (`a`, `a:b`, `a:*`, `*`) to a new key (`x`, `x:y`) or to `_` to drop it".into(),
                        );
                    }
                    plans.push(None);
                }
            }
        }
        plans
    }

    /// NC0006: each nucleotide reads only genes its kind may read.
    fn check_genes(&mut self, inbound: &[Vec<Option<usize>>]) {
        let offset = self.incoming.len();
        for (i, resolved) in inbound.iter().enumerate() {
            for &from in resolved.iter().flatten() {
                if from < offset {
                    continue; // The handler's inputs are always allowed.
                }
                let (kind, from_kind) = (self.specs[i].kind, self.spec(from).kind);
                if kind.allows_input_from(from_kind) {
                    continue;
                }
                let message = format!(
                    "{kind} `{}` has inbound nucleotide `{}` of kind {from_kind}, which is not allowed",
                    self.specs[i].name,
                    self.spec(from).name
                );
                let allowed: Vec<&str> = kind.may_take_from().iter().map(|k| k.name()).collect();
                let help = if allowed.is_empty() {
                    format!(
                        "a {kind} takes inputs only from the handler's inputs; remove the inbound node"
                    )
                } else {
                    format!(
                        "a {kind} may take inputs from {} nucleotides and from the handler's inputs; remove the inbound node or change its kind",
                        suggest::list(allowed)
                    )
                };
                self.error(Code::GENE_DEPENDENCY, offset + i, message, help);
            }
        }
    }

    /// Topological order (see [`Helix::order`]); NC0004 for each cycle.
    fn sort(&mut self, inbound: &[Vec<Option<usize>>]) -> Vec<usize> {
        let offset = self.incoming.len();
        let n = self.specs.len();
        let mut indegree = vec![0usize; n];
        let mut successors: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, resolved) in inbound.iter().enumerate() {
            for &from in resolved.iter().flatten() {
                if let Some(f) = from.checked_sub(offset) {
                    indegree[i] += 1;
                    successors[f].push(i);
                }
            }
        }
        // Ties are broken by name: rank every nucleotide by its name once, then compare ranks.
        let mut by_name: Vec<usize> = (0..n).collect();
        by_name.sort_by(|a, b| self.specs[*a].name.cmp(&self.specs[*b].name));
        let mut rank = vec![0usize; n];
        for (r, &i) in by_name.iter().enumerate() {
            rank[i] = r;
        }
        let is_source = |i: usize| self.specs[i].inbound_nodes.is_empty();
        let mut order = Vec::with_capacity(n);
        let mut ready: BinaryHeap<Reverse<(usize, usize)>> = (0..n)
            .filter(|&i| indegree[i] == 0 && !is_source(i))
            .map(|i| Reverse((rank[i], i)))
            .collect();
        let mut release = |i: usize, ready: &mut BinaryHeap<Reverse<(usize, usize)>>| {
            for &s in &successors[i] {
                indegree[s] -= 1;
                if indegree[s] == 0 && !is_source(s) {
                    ready.push(Reverse((rank[s], s)));
                }
            }
        };
        for &s in by_name.iter().filter(|&&i| is_source(i)) {
            order.push(s);
            release(s, &mut ready);
        }
        while let Some(Reverse((_, i))) = ready.pop() {
            order.push(i);
            release(i, &mut ready);
        }
        if order.len() < n {
            self.report_cycles(inbound, &order);
        }
        order.into_iter().map(|i| i + offset).collect()
    }

    fn report_cycles(&mut self, inbound: &[Vec<Option<usize>>], done: &[usize]) {
        let offset = self.incoming.len();
        let n = self.specs.len();
        // 0: unsorted, 1: sorted, 2: on a reported cycle or downstream of one.
        let mut state = vec![0u8; n];
        for &i in done {
            state[i] = 1;
        }
        let blocked_inbound = |i: usize, state: &[u8]| {
            inbound[i]
                .iter()
                .flatten()
                .filter_map(|f| f.checked_sub(offset))
                .find(|f| state[*f] != 1)
        };
        for start in 0..n {
            if state[start] != 0 {
                continue;
            }
            // Walk backwards along unsorted inbound nodes; every unsorted node has one, so the
            // walk ends on a node seen before: a new cycle, or one already reported.
            let mut path = vec![start];
            let mut seen: HashMap<usize, usize> = HashMap::from([(start, 0)]);
            let cycle = loop {
                let at = *path.last().expect("path is never empty");
                let Some(prev) = blocked_inbound(at, &state) else {
                    break None;
                };
                if state[prev] == 2 {
                    break None;
                }
                if let Some(&pos) = seen.get(&prev) {
                    break Some(path[pos..].to_vec());
                }
                seen.insert(prev, path.len());
                path.push(prev);
            };
            for &p in &path {
                state[p] = 2;
            }
            if let Some(mut cycle) = cycle {
                // The walk went backwards; show the cycle forwards, from its smallest name.
                cycle.reverse();
                let first = (0..cycle.len())
                    .min_by_key(|&k| &self.specs[cycle[k]].name)
                    .expect("a cycle has a node");
                cycle.rotate_left(first);
                let mut names: Vec<String> = cycle
                    .iter()
                    .map(|&c| format!("`{}`", self.specs[c].name))
                    .collect();
                names.push(names[0].clone());
                let head = cycle[0];
                self.error(
                    Code::CYCLE,
                    offset + head,
                    format!("nucleotides form a cycle: {}", names.join(" -> ")),
                    "remove one of these inbound nodes: the DNA helix must have no cycles".into(),
                );
            }
        }
    }
}

mod keys;
mod svg;
pub(crate) use svg::xml;

#[cfg(test)]
mod tests;
