//! A linearizability checker for the histories the real-process cluster tests record, with two
//! ready models: a CAS register (a KV key holding a counter) and a lock (a KV key acquired and
//! released with sessions).
//!
//! The search is Wing & Gong's, as improved by Lowe ("Testing for linearizability", 2017) and
//! used by Knossos and Porcupine: the history becomes a time-ordered list of call and return
//! entries; the search repeatedly picks an operation whose call comes before the first
//! remaining return, applies it to the model, lifts its two entries out of the list and starts
//! over, backtracking when it meets a return entry (that operation should already have taken
//! effect). A set of visited configurations — which operations are linearized, plus the model
//! state — prunes every branch that reaches a configuration seen before: what can follow
//! depends on nothing else. Checking each key separately (P-compositionality, Horn & Kroening,
//! "Faster linearizability checking via P-compositionality", 2015) keeps every search small;
//! [`check_partitioned`] does it for a history split by the caller.
//!
//! Operations with unknown outcomes are what makes such searches blow up (each pending one may
//! or may not have been applied), so three more things keep them in check: a configuration is
//! also pruned when a visited one has the same known operations and state with fewer unknown
//! ones applied (`Visited`); of pending unknown operations with equal inputs only the earliest
//! called is tried (`Search::depth_first`); and when a plain depth-first search does not
//! decide quickly, the configurations are searched in rounds by how many unknown operations
//! they apply, so that none is explored before one that prunes it (`Search::search`).
//!
//! Time convention: an operation must come after another only when its call is strictly later
//! than the other's return. Equal times count as overlapping (calls are ordered before returns
//! at the same instant), so coarse or equal timestamps can only make the check more lenient,
//! never report a violation that did not happen.
//!
//! Unknown outcomes (the client got no answer: a timeout, a reset connection) return at +∞:
//! such an operation may take effect at any point after its call — even long after the client
//! gave up — or never. [`Model::step`] says what it does when it does take effect; the search
//! also considers leaving it out, and succeeds once every operation with a known outcome is
//! placed.
//!
//! ```ignore
//! use linearizability::{CasRegister, Operation, RegisterInput as In, RegisterOutput as Out};
//!
//! let history = vec![
//!     // client, call and return times (ns on one monotonic clock), input, output
//!     Operation::returned(0, 0, 10, In::Write(1), Out::Written),
//!     Operation::returned(1, 5, 20, In::Cas { expect: 1, new: 2 }, Out::Applied(true)),
//!     Operation::unknown(2, 12, In::Write(7)), // timed out: may apply later, or never
//!     Operation::returned(0, 30, 40, In::Read, Out::Value(Some(2))),
//! ];
//! let verdict = linearizability::check(&CasRegister, &history);
//! assert!(verdict.is_linearizable(), "{verdict}");
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Debug, Write as _};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// What a client learned about an operation it sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<O> {
    /// It answered with this output.
    Returned(O),
    /// No answer (timeout, connection error): it may have taken effect at any time after its
    /// call, or never.
    Unknown,
}

/// One operation of a history, as a client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// The client (one sequential process) that issued it; only used in explanations.
    pub client: usize,
    /// When it was sent, in nanoseconds on a clock shared by all the clients.
    pub call: u64,
    /// When its answer arrived; `None` for +∞. Ignored (taken as +∞) when the outcome is
    /// [`Outcome::Unknown`]: the server may still apply a request the client stopped waiting
    /// for.
    pub ret: Option<u64>,
    pub input: I,
    pub outcome: Outcome<O>,
}

impl<I, O> Operation<I, O> {
    /// An operation that got an answer.
    pub fn returned(client: usize, call: u64, ret: u64, input: I, output: O) -> Self {
        Operation {
            client,
            call,
            ret: Some(ret),
            input,
            outcome: Outcome::Returned(output),
        }
    }

    /// An operation that got no answer.
    pub fn unknown(client: usize, call: u64, input: I) -> Self {
        Operation {
            client,
            call,
            ret: None,
            input,
            outcome: Outcome::Unknown,
        }
    }

    /// Whether the linearization must contain it (it answered, so it took effect).
    fn is_known(&self) -> bool {
        matches!(self.outcome, Outcome::Returned(_))
    }

    /// When it returned, for ordering: `None` is +∞, after every finite time.
    fn return_time(&self) -> Option<u64> {
        if self.is_known() { self.ret } else { None }
    }
}

/// A sequential specification of one object.
pub trait Model {
    type State: Clone + Eq + Hash + Debug;
    /// Compared only to treat operations with unknown outcomes and equal inputs as
    /// interchangeable.
    type Input: Debug + PartialEq;
    type Output: Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after `input` takes effect in `state` and yields `outcome`, or `None` when it
    /// could not have yielded that outcome there. For [`Outcome::Unknown`], the state after it
    /// takes effect (whatever its output would have been); the search itself covers the
    /// operation never taking effect.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        outcome: &Outcome<Self::Output>,
    ) -> Option<Self::State>;
}

/// How much work one search may do before it gives up with [`Verdict::Unknown`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Calls of [`Model::step`]; the visited-configuration set grows by at most one entry per
    /// call, so this also bounds the memory.
    pub max_steps: u64,
    /// Wall-clock time, for models whose steps are expensive.
    pub max_time: Option<Duration>,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_steps: 5_000_000,
            max_time: Some(Duration::from_mins(1)),
        }
    }
}

/// The result of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No linearization exists; the explanation gives the longest linearizable prefix found
    /// and the operations that could not come next.
    NotLinearizable {
        explanation: String,
    },
    /// The search ran out of its [`Budget`] (the history may be either).
    Unknown {
        reason: String,
    },
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => f.write_str("linearizable"),
            Verdict::NotLinearizable { explanation } => {
                write!(f, "not linearizable: {explanation}")
            }
            Verdict::Unknown { reason } => write!(f, "unknown: {reason}"),
        }
    }
}

/// Checks one history against `model` with the default [`Budget`]. The history need not be
/// sorted.
pub fn check<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>]) -> Verdict {
    check_with(model, history, &Budget::default())
}

/// Checks one history against `model` within `budget`.
///
/// # Panics
/// If an operation with a known outcome returned before it was called: the recording is
/// broken, and no verdict about the system would mean anything.
pub fn check_with<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    budget: &Budget,
) -> Verdict {
    for (index, op) in history.iter().enumerate() {
        if let Some(ret) = op.return_time() {
            assert!(
                ret >= op.call,
                "operation #{index} returned ({ret}) before it was called ({})",
                op.call
            );
        }
    }
    let quick_steps = (budget.max_steps / 10).min(100 * history.len() as u64 + 10_000);
    Search::new(model, history, budget).run(quick_steps)
}

/// Checks independent parts of a history (one per key, say) separately, each within `budget`:
/// linearizability is local (Herlihy & Wing), so the whole is linearizable exactly when every
/// part is — as long as the model of each part really is independent of the others. Every part
/// is checked; the verdict names each failing (or undecided) part by its label.
///
/// `partitions` yields `(label, history)` pairs: a `&HashMap<String, Vec<Operation<..>>>`
/// or a `Vec<(&str, Vec<Operation<..>>)>`, for instance.
pub fn check_partitioned<M, K, H, P>(model: &M, partitions: P, budget: &Budget) -> Verdict
where
    M: Model,
    K: Debug,
    H: AsRef<[Operation<M::Input, M::Output>]>,
    P: IntoIterator<Item = (K, H)>,
{
    let mut failures = Vec::new();
    let mut unknowns = Vec::new();
    for (label, history) in partitions {
        match check_with(model, history.as_ref(), budget) {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable { explanation } => {
                failures.push(format!("part {label:?}: {explanation}"));
            }
            Verdict::Unknown { reason } => unknowns.push(format!("part {label:?}: {reason}")),
        }
    }
    if !failures.is_empty() {
        // Undecided parts are worth knowing about too, but they are not the news.
        failures.extend(unknowns);
        Verdict::NotLinearizable {
            explanation: failures.join("\n"),
        }
    } else if !unknowns.is_empty() {
        Verdict::Unknown {
            reason: unknowns.join("\n"),
        }
    } else {
        Verdict::Linearizable
    }
}

/// A fixed-size set of small integers (operation numbers).
#[derive(Clone, PartialEq, Eq, Hash)]
struct BitSet(Box<[u64]>);

impl BitSet {
    fn with_capacity(bits: usize) -> Self {
        BitSet(vec![0; bits.div_ceil(64)].into_boxed_slice())
    }

    fn insert(&mut self, bit: usize) {
        self.0[bit / 64] |= 1 << (bit % 64);
    }

    fn remove(&mut self, bit: usize) {
        self.0[bit / 64] &= !(1 << (bit % 64));
    }

    fn contains(&self, bit: usize) -> bool {
        self.0[bit / 64] & (1 << (bit % 64)) != 0
    }

    fn len(&self) -> usize {
        self.0.iter().map(|word| word.count_ones() as usize).sum()
    }

    /// The largest member.
    fn last(&self) -> Option<usize> {
        let (index, word) = self.0.iter().enumerate().rev().find(|(_, w)| **w != 0)?;
        Some(index * 64 + 63 - word.leading_zeros() as usize)
    }

    /// The smallest non-member below `bits`.
    fn first_absent(&self, bits: usize) -> Option<usize> {
        let (index, word) = self.0.iter().enumerate().find(|(_, w)| **w != u64::MAX)?;
        Some(index * 64 + word.trailing_ones() as usize).filter(|&bit| bit < bits)
    }

    fn is_subset(&self, other: &BitSet) -> bool {
        self.0.iter().zip(other.0.iter()).all(|(a, b)| a & !b == 0)
    }
}

/// The configurations visited so far (which operations are linearized, and the state), and
/// the current one's linearized sets.
///
/// The linearized set is kept in two parts, the known-outcome operations and the unknown ones,
/// because a configuration is also *dominated* by one with the same known part and state but
/// fewer unknown operations applied: those not applied yet may still be applied later or
/// never, and they have no return entry that could force them, so every way to go on from the
/// larger configuration is open from the smaller one too. An exact-match cache would count
/// each subset of the pending unknown operations separately — 2^k configurations for k of them
/// pending — which made searches over a few hundred operations with a dozen timeouts run out of
/// budget.
struct Visited<S> {
    /// Each operation's number among the known or among the unknown ones.
    number: Vec<usize>,
    known: BitSet,
    unknown: BitSet,
    /// For each known part and state, the unknown parts seen with it, none a subset of another.
    seen: HashMap<(BitSet, S), Vec<BitSet>>,
}

impl<S: Clone + Eq + Hash> Visited<S> {
    fn new(list: &EntryList) -> Self {
        Visited {
            number: list.number.clone(),
            known: BitSet::with_capacity(list.known_ret.len()),
            unknown: BitSet::with_capacity(list.unknown_call.len()),
            seen: HashMap::new(),
        }
    }

    fn part(&mut self, known: bool) -> &mut BitSet {
        if known {
            &mut self.known
        } else {
            &mut self.unknown
        }
    }

    /// The configuration before any operation, recorded as visited.
    fn root(&mut self, state: S) -> Seed<S> {
        let (known, unknown) = (self.known.clone(), self.unknown.clone());
        self.seen
            .insert((known.clone(), state.clone()), vec![unknown.clone()]);
        Seed {
            key: (known, state),
            unknown,
            trail: NIL,
        }
    }

    /// Whether a configuration recorded earlier is dominated by one recorded since.
    fn is_dominated(&self, seed: &Seed<S>) -> bool {
        self.seen
            .get(&seed.key)
            .is_none_or(|parts| !parts.contains(&seed.unknown))
    }

    /// Makes a recorded configuration the current one.
    fn move_to(&mut self, known: BitSet, unknown: BitSet) {
        self.known = known;
        self.unknown = unknown;
    }

    /// The current configuration's unknown part, with `op` (unknown) added.
    fn unknown_with(&self, op: usize) -> BitSet {
        let mut unknown = self.unknown.clone();
        unknown.insert(self.number[op]);
        unknown
    }

    /// Records the configuration one step on — `op` linearized too, ending in `state` —
    /// unless it (or one dominating it) is recorded already; returns whether it was new.
    fn mark(&mut self, op: usize, known: bool, state: &S) -> bool {
        let number = self.number[op];
        self.part(known).insert(number);
        let unknown_parts = self
            .seen
            .entry((self.known.clone(), state.clone()))
            .or_default();
        let new = !unknown_parts
            .iter()
            .any(|seen| seen.is_subset(&self.unknown));
        if new {
            // Those the new one dominates need no checking against any more.
            unknown_parts.retain(|seen| !self.unknown.is_subset(seen));
            unknown_parts.push(self.unknown.clone());
        }
        self.part(known).remove(number);
        new
    }

    /// Moves the current configuration one step on, with `op` linearized too.
    fn enter(&mut self, op: usize, known: bool) {
        let number = self.number[op];
        self.part(known).insert(number);
    }

    /// Undoes [`Visited::enter`] (the configuration stays recorded).
    fn leave(&mut self, op: usize, known: bool) {
        let number = self.number[op];
        self.part(known).remove(number);
    }
}

/// "No node": the end of the list, or an operation without a return entry.
const NIL: usize = usize::MAX;
/// The list's sentinel head node.
const HEAD: usize = 0;

#[derive(Clone, Copy)]
enum Entry {
    /// The call of an operation, with the node of its return (`NIL` when it has none: an
    /// unknown outcome, which the search may leave out).
    Call {
        ret: usize,
    },
    Return,
}

#[derive(Clone, Copy)]
struct Node {
    prev: usize,
    next: usize,
    op: usize,
    /// The operation's number among the known ones or among the unknown ones.
    number: usize,
    entry: Entry,
}

/// The doubly linked, time-ordered list of the entries of the operations not yet linearized.
/// Lifting an operation unlinks its entries but leaves their own links intact, so undoing
/// lifts in reverse order puts them back exactly (Knuth's dancing links).
///
/// Known operations are numbered in the order of their returns and unknown ones in the order
/// of their calls, which lets [`EntryList::rebuild`] find the few entries it must relink.
struct EntryList {
    /// `nodes[HEAD]` is the head; then one node per entry, in time order.
    nodes: Vec<Node>,
    /// Each operation's number (see [`Node::number`]).
    number: Vec<usize>,
    /// By known number: the return node.
    known_ret: Vec<usize>,
    /// By known number `r`: the earliest call node of the known operations numbered `r` on.
    earliest_call_from: Vec<usize>,
    /// By unknown number: the call node.
    unknown_call: Vec<usize>,
    /// By unknown number: the number of the latest earlier-called unknown operation with an
    /// equal input, or `NIL`.
    twin_before: Vec<usize>,
    /// Every node after this one links to its neighbours in time order, as built.
    pristine_after: usize,
}

impl EntryList {
    fn new<I: PartialEq, O>(ops: &[Operation<I, O>]) -> Self {
        // Sort key: (time is +∞, time, return after call, operation). Calls sort before
        // returns at equal times, so touching intervals overlap (see the module docs).
        let mut events: Vec<(bool, u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (index, op) in ops.iter().enumerate() {
            events.push((false, op.call, false, index));
            if op.is_known() {
                let ret = op.return_time();
                events.push((ret.is_none(), ret.unwrap_or(0), true, index));
            }
        }
        events.sort_unstable();

        let mut list = EntryList {
            nodes: Vec::with_capacity(events.len() + 1),
            number: vec![NIL; ops.len()],
            known_ret: Vec::new(),
            earliest_call_from: Vec::new(),
            unknown_call: Vec::new(),
            twin_before: Vec::new(),
            pristine_after: 0,
        };
        list.nodes.push(Node {
            prev: NIL,
            next: if events.is_empty() { NIL } else { 1 },
            op: NIL,
            number: NIL,
            entry: Entry::Return,
        });
        let mut call_node = vec![NIL; ops.len()];
        for (position, &(_, _, is_return, op)) in events.iter().enumerate() {
            let node = position + 1;
            let entry = if is_return {
                // The call sorts first, so its node already exists.
                let call = call_node[op];
                list.nodes[call].entry = Entry::Call { ret: node };
                list.nodes[call].number = list.known_ret.len();
                list.number[op] = list.known_ret.len();
                list.known_ret.push(node);
                Entry::Return
            } else {
                call_node[op] = node;
                if !ops[op].is_known() {
                    list.number[op] = list.unknown_call.len();
                    list.unknown_call.push(node);
                }
                Entry::Call { ret: NIL }
            };
            let next = if position + 1 < events.len() {
                node + 1
            } else {
                NIL
            };
            list.nodes.push(Node {
                prev: node - 1,
                next,
                op,
                number: list.number[op],
                entry,
            });
        }
        let unknown_op = |u: usize| &ops[list.nodes[list.unknown_call[u]].op];
        list.twin_before = (0..list.unknown_call.len())
            .map(|u| {
                (0..u)
                    .rev()
                    .find(|&v| unknown_op(v).input == unknown_op(u).input)
                    .unwrap_or(NIL)
            })
            .collect();
        let mut earliest = usize::MAX;
        list.earliest_call_from = vec![0; list.known_ret.len()];
        for r in (0..list.known_ret.len()).rev() {
            earliest = earliest.min(call_node[list.nodes[list.known_ret[r]].op]);
            list.earliest_call_from[r] = earliest;
        }
        list
    }

    fn first(&self) -> usize {
        self.nodes[HEAD].next
    }

    /// Relinks the list to hold the entries of the operations not in `known` or `unknown`
    /// (by number), after any lifts that were not undone.
    ///
    /// Relinking the whole list for every configuration taken up again cost more than
    /// searching from it. Only a window needs it: before the call of the first known operation
    /// not linearized, every known one is, and only unknown calls remain; after the last
    /// linearized entry, nothing is linearized and the nodes still link as built, since every
    /// lift there was undone — except between `end` and where an earlier rebuild ended.
    fn rebuild(&mut self, known: &BitSet, unknown: &BitSet) {
        let len = self.nodes.len();
        let last_known = known.last().map_or(0, |r| self.known_ret[r]);
        let last_unknown = unknown.last().map_or(0, |u| self.unknown_call[u]);
        // The first node of the untouched tail (`len` if there is none).
        let end = last_known.max(last_unknown) + 1;
        let start = known
            .first_absent(self.known_ret.len())
            .map_or(end, |r| self.earliest_call_from[r].min(end));

        // Make everything from `end` on link as built again.
        for node in end..=self.pristine_after.min(len - 1) {
            self.nodes[node].prev = node - 1;
            self.nodes[node].next = if node + 1 < len { node + 1 } else { NIL };
        }
        self.pristine_after = end;

        let mut last = HEAD;
        let mut link = |nodes: &mut [Node], node: usize| {
            nodes[last].next = node;
            nodes[node].prev = last;
            last = node;
        };
        for (u, &call) in self.unknown_call.iter().enumerate() {
            if call >= start {
                break;
            }
            if !unknown.contains(u) {
                link(&mut self.nodes, call);
            }
        }
        for node in start..end {
            let Node { number, entry, .. } = self.nodes[node];
            let linearized = match entry {
                Entry::Call { ret: NIL } => unknown.contains(number),
                _ => known.contains(number),
            };
            if !linearized {
                link(&mut self.nodes, node);
            }
        }
        if end < len {
            link(&mut self.nodes, end);
        } else {
            self.nodes[last].next = NIL;
        }
    }

    /// Forgets which nodes still link as built (after a search left lifts in place).
    fn taint(&mut self) {
        self.pristine_after = self.nodes.len();
    }

    fn unlink(&mut self, node: usize) {
        let Node { prev, next, .. } = self.nodes[node];
        self.nodes[prev].next = next;
        if next != NIL {
            self.nodes[next].prev = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let Node { prev, next, .. } = self.nodes[node];
        self.nodes[prev].next = node;
        if next != NIL {
            self.nodes[next].prev = node;
        }
    }

    /// Removes a call entry and its return entry.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if let Entry::Call { ret } = self.nodes[call].entry
            && ret != NIL
        {
            self.unlink(ret);
        }
    }

    /// Undoes [`EntryList::lift`] (which must be the latest lift not undone yet).
    fn unlift(&mut self, call: usize) {
        if let Entry::Call { ret } = self.nodes[call].entry
            && ret != NIL
        {
            self.relink(ret);
        }
        self.relink(call);
    }
}

/// A configuration to search from: the linearized known operations and the state (together,
/// its key in [`Visited`]), the applied unknown operations, and how it was reached.
struct Seed<S> {
    key: (BitSet, S),
    unknown: BitSet,
    trail: usize,
}

/// How a depth-first search treats an operation with an unknown outcome that could go next.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unknowns {
    /// Applies it there and goes on, like a known one — but only after trying every known one
    /// at that point, since an operation with an unknown outcome often never took effect.
    InPlace,
    /// Leaves the configuration with it applied as a seed for the next round.
    Defer,
}

/// The longest linearizable prefix seen, for the explanation.
struct Best<S> {
    /// How many known operations it places.
    known: usize,
    /// Its last operation in [`Search::trail`].
    trail: usize,
    state: S,
}

struct Search<'a, M: Model> {
    model: &'a M,
    ops: &'a [Operation<M::Input, M::Output>],
    budget: &'a Budget,
    known_total: usize,
    list: EntryList,
    visited: Visited<M::State>,
    /// The linearization orders of the configurations reached, as a tree: (operation, index of
    /// the entry before it or `NIL`), one entry per step of the search path, per seed and per
    /// best prefix.
    trail: Vec<(usize, usize)>,
    /// Entries below this are referenced by a seed or by `best`; those above only by the
    /// current search path, so backtracking drops them.
    kept: usize,
    best: Best<M::State>,
    steps: u64,
    /// The budget's `max_steps`, or the share of it the current phase may use.
    step_limit: u64,
    started: Instant,
}

impl<'a, M: Model> Search<'a, M> {
    fn new(model: &'a M, ops: &'a [Operation<M::Input, M::Output>], budget: &'a Budget) -> Self {
        let list = EntryList::new(ops);
        let visited = Visited::new(&list);
        Search {
            model,
            ops,
            budget,
            known_total: ops.iter().filter(|op| op.is_known()).count(),
            list,
            visited,
            trail: Vec::new(),
            kept: 0,
            best: Best {
                known: 0,
                trail: NIL,
                state: model.init(),
            },
            steps: 0,
            step_limit: budget.max_steps,
            started: Instant::now(),
        }
    }

    /// Counts one model step; `Err(reason)` once the budget is spent.
    fn spend(&mut self) -> Result<(), String> {
        self.steps += 1;
        if self.steps > self.step_limit {
            return Err(format!(
                "gave up after {} model steps ({} operations)",
                self.step_limit,
                self.ops.len()
            ));
        }
        // Reading the clock on every step would cost more than many steps do.
        if self.steps.is_multiple_of(4096)
            && let Some(limit) = self.budget.max_time
            && self.started.elapsed() > limit
        {
            return Err(format!(
                "gave up after {limit:?} and {} model steps ({} operations)",
                self.steps,
                self.ops.len()
            ));
        }
        Ok(())
    }

    fn extend_trail(&mut self, op: usize, parent: usize) -> usize {
        self.trail.push((op, parent));
        self.trail.len() - 1
    }

    /// Searches, the quick way first with up to `quick_steps` steps (none: skipped).
    fn run(mut self, quick_steps: u64) -> Verdict {
        match self.search(quick_steps) {
            Ok(true) => Verdict::Linearizable,
            Ok(false) => Verdict::NotLinearizable {
                explanation: self.explain(),
            },
            Err(reason) => Verdict::Unknown { reason },
        }
    }

    /// Searches the configurations in rounds by how many unknown operations they apply: the
    /// first round applies none, each next one applies one more on top of the configurations
    /// the previous round reached. A configuration is then never explored before one that
    /// dominates it (see [`Visited`]): all those apply fewer unknown operations, so they were
    /// all reached in earlier rounds. A single depth-first search explores deep configurations
    /// with some unknown operations applied, then backtracks to shallower ones, applies fewer
    /// from there and reaches the same deep ones again with less; on a failing history with a
    /// dozen timeouts that redid the same work 50 times over and ran out of budget.
    ///
    /// Most histories are linearizable without any of this, though, and a plain depth-first
    /// search finds their linearization fastest; so one runs first, on a small share of the
    /// budget (about a hundred steps per operation).
    fn search(&mut self, quick_steps: u64) -> Result<bool, String> {
        if quick_steps > 0 {
            self.step_limit = quick_steps;
            let root = self.visited.root(self.model.init());
            let quick = self.depth_first(root, Unknowns::InPlace, &mut Vec::new());
            self.step_limit = self.budget.max_steps;
            match quick {
                Ok(found) => return Ok(found),
                // Out of its share, it hands over; out of time, so does the whole search.
                Err(_) if self.steps > quick_steps => {}
                Err(reason) => return Err(reason),
            }
        }

        // Its visited configurations were not all explored: start afresh (keeping the trail,
        // where its best prefix is).
        self.visited = Visited::new(&self.list);
        self.list.taint();
        self.kept = self.trail.len();
        let mut round = vec![self.visited.root(self.model.init())];
        loop {
            let mut next = Vec::new();
            for seed in round {
                // Dominated by one reached since it was queued: already covered.
                if self.visited.is_dominated(&seed) {
                    continue;
                }
                if self.depth_first(seed, Unknowns::Defer, &mut next)? {
                    return Ok(true);
                }
            }
            if next.is_empty() {
                return Ok(false);
            }
            round = next;
        }
    }

    /// The Wing–Gong–Lowe search from `seed`: true when it places every known operation.
    fn depth_first(
        &mut self,
        seed: Seed<M::State>,
        unknowns: Unknowns,
        deferred: &mut Vec<Seed<M::State>>,
    ) -> Result<bool, String> {
        let ops = self.ops;
        let Seed {
            key: (known, mut state),
            unknown,
            mut trail,
        } = seed;
        self.visited.move_to(known, unknown);
        self.list
            .rebuild(&self.visited.known, &self.visited.unknown);
        let mut remaining = self.known_total - self.visited.known.len();
        // The lifted call entries, each with the state and trail before it.
        let mut stack: Vec<(usize, M::State, usize)> = Vec::new();
        // With `Unknowns::InPlace`, whether the scan of this level is past the known ones.
        let mut unknown_pass = false;
        let mut entry = self.list.first();

        while remaining > 0 {
            // With a known operation left, its return entry ends every scan; `NIL` cannot be
            // reached, but treating it as that return keeps the loop safe regardless.
            let node = if entry == NIL {
                None
            } else {
                Some(self.list.nodes[entry])
            };
            let Some(Node {
                op,
                next,
                entry: Entry::Call { ret },
                ..
            }) = node
            else {
                // A return entry: that operation should have taken effect by now.
                if unknowns == Unknowns::InPlace && !unknown_pass {
                    unknown_pass = true;
                    entry = self.list.first();
                    continue;
                }
                let Some((call, before, trail_before)) = stack.pop() else {
                    return Ok(false);
                };
                self.trail.truncate(trail.max(self.kept));
                trail = trail_before;
                state = before;
                let Node { op, next, .. } = self.list.nodes[call];
                let known = self.is_known(call);
                self.visited.leave(op, known);
                self.list.unlift(call);
                if known {
                    remaining += 1;
                }
                // Go on with the next candidate of that level, in the pass it was in.
                unknown_pass = !known;
                entry = next;
                continue;
            };

            let known = ret != NIL;
            if unknowns == Unknowns::InPlace && known == unknown_pass {
                entry = next;
                continue;
            }
            // Of unknown operations with equal inputs, only the earliest called not applied
            // yet is worth trying: it can go anywhere a later one can (no return bounds
            // either), so any linearization applying a later one and not it works with it
            // instead. Several clients' timed-out `Cas { expect: 5, new: 6 }`, say.
            if !known {
                let twin = self.list.twin_before[self.list.nodes[entry].number];
                if twin != NIL && !self.visited.unknown.contains(twin) {
                    entry = next;
                    continue;
                }
            }
            self.spend()?;
            let Some(after) = self.model.step(&state, &ops[op].input, &ops[op].outcome) else {
                entry = next;
                continue;
            };
            // An unknown operation that changes nothing is never worth applying: leaving it
            // out keeps the same state with more freedom later.
            if (!known && after == state) || !self.visited.mark(op, known, &after) {
                entry = next;
                continue;
            }
            if !known && unknowns == Unknowns::Defer {
                let unknown = self.visited.unknown_with(op);
                deferred.push(Seed {
                    key: (self.visited.known.clone(), after),
                    unknown,
                    trail: self.extend_trail(op, trail),
                });
                self.kept = self.trail.len();
                entry = next;
                continue;
            }

            // One step on.
            self.visited.enter(op, known);
            self.list.lift(entry);
            let trail_before = trail;
            trail = self.extend_trail(op, trail);
            stack.push((entry, std::mem::replace(&mut state, after), trail_before));
            if known {
                remaining -= 1;
                if self.known_total - remaining > self.best.known {
                    self.best = Best {
                        known: self.known_total - remaining,
                        trail,
                        state: state.clone(),
                    };
                    self.kept = self.trail.len();
                }
            }
            unknown_pass = false;
            entry = self.list.first();
        }
        Ok(true)
    }

    /// Whether a call entry's operation has a known outcome (and so a return entry).
    fn is_known(&self, call: usize) -> bool {
        matches!(self.list.nodes[call].entry, Entry::Call { ret } if ret != NIL)
    }

    /// Describes why no linearization exists, from the longest prefix the search found.
    fn explain(&self) -> String {
        let ops = self.ops;
        let best = &self.best;
        let mut order = Vec::new();
        let mut at = best.trail;
        while at != NIL {
            let (op, parent) = self.trail[at];
            order.push(op);
            at = parent;
        }
        order.reverse();
        let origin = ops.iter().map(|op| op.call).min().unwrap_or(0);
        let mut placed = vec![false; ops.len()];
        for &op in &order {
            placed[op] = true;
        }
        let known_total = self.known_total;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} operations ({known_total} with known outcomes) from {} clients; searched {} \
             model steps. The longest linearizable prefix found places {} operations with \
             known outcomes:",
            ops.len(),
            ops.iter().map(|op| op.client).collect::<HashSet<_>>().len(),
            self.steps,
            best.known,
        );
        if order.len() > SHOWN {
            let _ = writeln!(out, "  ... ({} earlier)", order.len() - SHOWN);
        }
        for &op in order.iter().rev().take(SHOWN).rev() {
            let _ = writeln!(out, "  {}", describe(ops, op, origin));
        }
        let _ = writeln!(out, "state after it: {:?}", best.state);

        // The unplaced known operation that returns first had to go before its return; the
        // candidates are the unplaced operations called by then.
        let due = (0..ops.len())
            .filter(|&op| !placed[op] && ops[op].is_known())
            .min_by_key(|&op| (ops[op].return_time().is_none(), ops[op].return_time(), op));
        let Some(due) = due else {
            return out;
        };
        let deadline = ops[due].return_time();
        let _ = writeln!(
            out,
            "{} had to take effect by its return at {}, but none of the operations that could \
             come next fits:",
            describe(ops, due, origin),
            deadline.map_or_else(|| "+inf".to_owned(), |t| relative(t, origin)),
        );
        let candidates: Vec<usize> = (0..ops.len())
            .filter(|&op| !placed[op] && deadline.is_none_or(|d| ops[op].call <= d))
            .collect();
        for &op in candidates.iter().take(2 * SHOWN) {
            let why = match self
                .model
                .step(&best.state, &ops[op].input, &ops[op].outcome)
            {
                None => "impossible in that state".to_owned(),
                Some(after) if !ops[op].is_known() && after == best.state => {
                    "would change nothing (unknown outcome, so left out)".to_owned()
                }
                Some(after) => format!("possible (-> {after:?}), but nothing fits after it"),
            };
            let _ = writeln!(out, "  {}: {why}", describe(ops, op, origin));
        }
        if candidates.len() > 2 * SHOWN {
            let _ = writeln!(out, "  ... ({} more)", candidates.len() - 2 * SHOWN);
        }
        out
    }
}

/// How many operations of the prefix an explanation lists (twice as many candidates).
const SHOWN: usize = 12;

/// `+12.345678ms`: a time relative to the history's first call.
fn relative(time: u64, origin: u64) -> String {
    let ns = time.saturating_sub(origin);
    format!("+{}.{:06}ms", ns / 1_000_000, ns % 1_000_000)
}

/// One operation, for explanations: index in the history, client, interval, input, outcome.
fn describe<I: Debug, O: Debug>(ops: &[Operation<I, O>], index: usize, origin: u64) -> String {
    let op = &ops[index];
    let ret = op
        .return_time()
        .map_or_else(|| "+inf".to_owned(), |t| relative(t, origin));
    let outcome = match &op.outcome {
        Outcome::Returned(output) => format!("{output:?}"),
        Outcome::Unknown => "unknown (no answer)".to_owned(),
    };
    format!(
        "#{index} client {} [{} .. {ret}] {:?} -> {outcome}",
        op.client,
        relative(op.call, origin),
        op.input
    )
}

/// A KV key holding an integer (a counter), read, written and compare-and-swapped. A missing
/// key is `None`; a CAS never applies to a missing key (create it with a write).
#[derive(Clone, Copy, Debug, Default)]
pub struct CasRegister;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterInput {
    Read,
    Write(u64),
    /// Sets the value to `new` if it is `expect`.
    Cas {
        expect: u64,
        new: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterOutput {
    /// A read's answer: the value, or `None` for a missing key.
    Value(Option<u64>),
    /// A write's acknowledgement.
    Written,
    /// A CAS's answer: whether it applied.
    Applied(bool),
}

impl Model for CasRegister {
    type State = Option<u64>;
    type Input = RegisterInput;
    type Output = RegisterOutput;

    fn init(&self) -> Option<u64> {
        None
    }

    fn step(
        &self,
        state: &Option<u64>,
        input: &RegisterInput,
        outcome: &Outcome<RegisterOutput>,
    ) -> Option<Option<u64>> {
        use Outcome::{Returned, Unknown};
        use RegisterOutput::{Applied, Value, Written};
        let holds = |expect: u64| *state == Some(expect);
        match (input, outcome) {
            (RegisterInput::Read, Returned(Value(value))) => (value == state).then_some(*state),
            // Nothing to check and nothing changed (the search then leaves it out).
            (RegisterInput::Read, Unknown) => Some(*state),
            (RegisterInput::Write(value), Returned(Written) | Unknown) => Some(Some(*value)),
            (RegisterInput::Cas { expect, new }, Returned(Applied(true))) => {
                holds(*expect).then_some(Some(*new))
            }
            (RegisterInput::Cas { expect, .. }, Returned(Applied(false))) => {
                (!holds(*expect)).then_some(*state)
            }
            // Taking effect, it applies exactly when the value matches; not applying at all is
            // the search's "never".
            (RegisterInput::Cas { expect, new }, Unknown) => {
                Some(if holds(*expect) { Some(*new) } else { *state })
            }
            // An output of another operation's kind: a broken recording.
            _ => None,
        }
    }
}

/// A lock key acquired and released with sessions, with Consul's semantics: acquiring a lock
/// the session already holds succeeds and keeps it; acquiring one another session holds fails;
/// releasing succeeds only for the holder (otherwise nothing changes). The state is the holder.
#[derive(Clone, Copy, Debug, Default)]
pub struct Lock;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockInput {
    /// Acquire with this session; returns whether the session holds the lock after it.
    Acquire(String),
    /// Release with this session; returns whether it held the lock (now free).
    Release(String),
}

impl Model for Lock {
    type State = Option<String>;
    type Input = LockInput;
    type Output = bool;

    fn init(&self) -> Option<String> {
        None
    }

    fn step(
        &self,
        state: &Option<String>,
        input: &LockInput,
        outcome: &Outcome<bool>,
    ) -> Option<Option<String>> {
        let holder = state.as_deref();
        match input {
            LockInput::Acquire(session) => {
                let can = holder.is_none_or(|h| h == session);
                match outcome {
                    Outcome::Returned(true) => can.then(|| Some(session.clone())),
                    Outcome::Returned(false) => (!can).then(|| state.clone()),
                    Outcome::Unknown if can => Some(Some(session.clone())),
                    Outcome::Unknown => Some(state.clone()),
                }
            }
            LockInput::Release(session) => {
                let holds = holder == Some(session.as_str());
                match outcome {
                    Outcome::Returned(true) => holds.then_some(None),
                    Outcome::Returned(false) => (!holds).then(|| state.clone()),
                    Outcome::Unknown if holds => Some(None),
                    Outcome::Unknown => Some(state.clone()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RegisterInput::{Cas, Read, Write};
    use RegisterOutput::{Applied, Value, Written};

    type RegisterOp = Operation<RegisterInput, RegisterOutput>;
    type LockOp = Operation<LockInput, bool>;

    fn op(
        client: usize,
        call: u64,
        ret: u64,
        input: RegisterInput,
        out: RegisterOutput,
    ) -> RegisterOp {
        Operation::returned(client, call, ret, input, out)
    }

    fn lock(client: usize, call: u64, ret: u64, input: LockInput, out: bool) -> LockOp {
        Operation::returned(client, call, ret, input, out)
    }

    fn acquire(session: &str) -> LockInput {
        LockInput::Acquire(session.to_owned())
    }

    fn release(session: &str) -> LockInput {
        LockInput::Release(session.to_owned())
    }

    fn assert_linearizable<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>]) {
        let verdict = check(model, history);
        assert_eq!(verdict, Verdict::Linearizable, "{verdict}");
    }

    /// Asserts a violation and returns its explanation.
    fn assert_violation<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>]) -> String {
        match check(model, history) {
            Verdict::NotLinearizable { explanation } => explanation,
            other => panic!("expected a violation, got {other}"),
        }
    }

    #[test]
    fn empty_and_unknown_only_histories_are_linearizable() {
        assert_linearizable(&CasRegister, &[]);
        assert_linearizable(
            &CasRegister,
            &[
                Operation::unknown(0, 0, Write(1)),
                Operation::unknown(1, 3, Read),
            ],
        );
    }

    #[test]
    fn sequential_register_history() {
        let history = [
            op(0, 0, 10, Read, Value(None)),
            op(0, 20, 30, Write(1), Written),
            op(1, 40, 50, Read, Value(Some(1))),
            op(1, 60, 70, Cas { expect: 1, new: 2 }, Applied(true)),
            op(0, 80, 90, Cas { expect: 1, new: 3 }, Applied(false)),
            op(0, 100, 110, Read, Value(Some(2))),
        ];
        assert_linearizable(&CasRegister, &history);
    }

    #[test]
    fn stale_read_after_completed_write_is_detected_and_explained() {
        let history = [
            op(0, 0, 10, Write(1), Written),
            op(0, 20, 30, Write(2), Written),
            op(1, 40, 50, Read, Value(Some(1))),
        ];
        let explanation = assert_violation(&CasRegister, &history);
        // The prefix (both writes), the state, and the read that cannot follow.
        assert!(explanation.contains("places 2 operations"), "{explanation}");
        assert!(
            explanation.contains("state after it: Some(2)"),
            "{explanation}"
        );
        assert!(
            explanation.contains(
                "#2 client 1 [+0.000040ms .. +0.000050ms] Read -> Value(Some(1)): impossible"
            ),
            "{explanation}"
        );
    }

    #[test]
    fn concurrent_write_and_read_may_go_either_way() {
        for seen in [None, Some(1)] {
            let history = [
                op(0, 0, 100, Write(1), Written),
                op(1, 10, 50, Read, Value(seen)),
            ];
            assert_linearizable(&CasRegister, &history);
        }
        // A read overlapping nothing must see the write, though.
        let history = [
            op(0, 0, 100, Write(1), Written),
            op(1, 101, 150, Read, Value(None)),
        ];
        assert_violation(&CasRegister, &history);
    }

    #[test]
    fn touching_intervals_overlap() {
        // The read is called at the instant the write returns: either order is allowed.
        let history = [
            op(0, 0, 10, Write(1), Written),
            op(1, 10, 20, Read, Value(None)),
        ];
        assert_linearizable(&CasRegister, &history);
    }

    #[test]
    fn new_then_old_read_inversion_is_detected() {
        // During a long write of 2, one reader sees 2 and a later reader sees 1 again.
        let history = [
            op(0, 0, 10, Write(1), Written),
            op(0, 20, 200, Write(2), Written),
            op(1, 30, 40, Read, Value(Some(2))),
            op(2, 50, 60, Read, Value(Some(1))),
        ];
        assert_violation(&CasRegister, &history);
        // Swapping what they saw is fine: the write took effect between the reads.
        let history = [
            op(0, 0, 10, Write(1), Written),
            op(0, 20, 200, Write(2), Written),
            op(1, 30, 40, Read, Value(Some(1))),
            op(2, 50, 60, Read, Value(Some(2))),
        ];
        assert_linearizable(&CasRegister, &history);
    }

    #[test]
    fn cas_lost_update_is_detected() {
        let start = op(0, 0, 10, Write(0), Written);
        let both = [
            start.clone(),
            op(1, 20, 40, Cas { expect: 0, new: 1 }, Applied(true)),
            op(2, 25, 45, Cas { expect: 0, new: 1 }, Applied(true)),
        ];
        assert_violation(&CasRegister, &both);
        let one = [
            start.clone(),
            op(1, 20, 40, Cas { expect: 0, new: 1 }, Applied(true)),
            op(2, 25, 45, Cas { expect: 0, new: 1 }, Applied(false)),
            op(0, 50, 60, Read, Value(Some(1))),
        ];
        assert_linearizable(&CasRegister, &one);
        // A CAS that fails although the value certainly matched.
        let wrong_failure = [
            start,
            op(1, 20, 40, Cas { expect: 0, new: 1 }, Applied(false)),
        ];
        assert_violation(&CasRegister, &wrong_failure);
    }

    #[test]
    fn cas_never_applies_to_a_missing_key() {
        assert_violation(
            &CasRegister,
            &[op(0, 0, 1, Cas { expect: 0, new: 1 }, Applied(true))],
        );
        assert_linearizable(
            &CasRegister,
            &[op(0, 0, 1, Cas { expect: 0, new: 1 }, Applied(false))],
        );
    }

    #[test]
    fn unknown_write_may_apply_never_or_late() {
        let never = [
            Operation::unknown(0, 0, Write(1)),
            op(1, 20, 30, Read, Value(None)),
        ];
        assert_linearizable(&CasRegister, &never);
        // It applies after the client gave up and after another read missed it.
        let late = [
            Operation::unknown(0, 0, Write(1)),
            op(1, 20, 30, Read, Value(None)),
            op(1, 40, 50, Read, Value(Some(1))),
        ];
        assert_linearizable(&CasRegister, &late);
    }

    #[test]
    fn unknown_write_cannot_be_undone_or_apply_before_its_call() {
        let undone = [
            Operation::unknown(0, 0, Write(1)),
            op(1, 20, 30, Read, Value(Some(1))),
            op(1, 40, 50, Read, Value(None)),
        ];
        assert_violation(&CasRegister, &undone);
        let early = [
            op(1, 0, 5, Read, Value(Some(1))),
            Operation::unknown(0, 10, Write(1)),
        ];
        assert_violation(&CasRegister, &early);
    }

    #[test]
    fn unknown_cas_must_have_applied_when_its_value_is_seen() {
        let applied = [
            op(0, 0, 10, Write(5), Written),
            Operation::unknown(1, 20, Cas { expect: 5, new: 6 }),
            op(2, 30, 40, Read, Value(Some(6))),
        ];
        assert_linearizable(&CasRegister, &applied);
        // Its expectation never held, so it cannot be where the 6 came from.
        let impossible = [
            op(0, 0, 10, Write(5), Written),
            Operation::unknown(1, 20, Cas { expect: 4, new: 6 }),
            op(2, 30, 40, Read, Value(Some(6))),
        ];
        assert_violation(&CasRegister, &impossible);
        // And an unknown CAS cannot apply twice: one of the reads is wrong.
        let twice = [
            op(0, 0, 10, Write(5), Written),
            Operation::unknown(1, 20, Cas { expect: 5, new: 6 }),
            op(2, 30, 40, Read, Value(Some(6))),
            op(2, 50, 60, Write(5), Written),
            op(2, 70, 80, Read, Value(Some(6))),
        ];
        assert_violation(&CasRegister, &twice);
    }

    #[test]
    fn identical_unknown_operations_may_all_apply() {
        // Only the earliest pending one of equal unknown operations is tried at a time, but
        // the others remain: here both CASes must have applied, one on each side of the write.
        let both = [
            op(0, 0, 10, Write(0), Written),
            Operation::unknown(1, 20, Cas { expect: 0, new: 1 }),
            Operation::unknown(2, 25, Cas { expect: 0, new: 1 }),
            op(0, 30, 40, Read, Value(Some(1))),
            op(0, 50, 60, Write(0), Written),
            op(0, 70, 80, Read, Value(Some(1))),
        ];
        assert_linearizable(&CasRegister, &both);
        let mut one = both.to_vec();
        one.remove(2);
        assert_violation(&CasRegister, &one);
    }

    #[test]
    #[should_panic(expected = "returned (5) before it was called (10)")]
    fn a_return_before_the_call_is_a_broken_recording() {
        check(&CasRegister, &[op(0, 10, 5, Read, Value(None))]);
    }

    #[test]
    fn unknown_read_constrains_nothing() {
        let history = [
            op(0, 0, 10, Write(1), Written),
            Operation::unknown(1, 20, Read),
            op(0, 30, 40, Read, Value(Some(1))),
        ];
        assert_linearizable(&CasRegister, &history);
    }

    #[test]
    fn lock_held_by_two_sessions_is_detected() {
        let history = [
            lock(0, 0, 10, acquire("a"), true),
            lock(1, 20, 30, acquire("b"), true),
        ];
        let explanation = assert_violation(&Lock, &history);
        assert!(
            explanation.contains("state after it: Some(\"a\")"),
            "{explanation}"
        );
        assert!(
            explanation.contains("Acquire(\"b\") -> true: impossible"),
            "{explanation}"
        );
    }

    #[test]
    fn lock_handed_over_through_an_overlapping_release() {
        let history = [
            lock(0, 0, 10, acquire("a"), true),
            lock(0, 15, 40, release("a"), true),
            lock(1, 20, 30, acquire("b"), true),
            lock(1, 50, 60, release("b"), true),
        ];
        assert_linearizable(&Lock, &history);
    }

    #[test]
    fn lock_reacquire_by_the_holder_keeps_it() {
        let history = [
            lock(0, 0, 10, acquire("a"), true),
            lock(0, 20, 30, acquire("a"), true),
            lock(1, 40, 50, acquire("b"), false),
            lock(0, 60, 70, release("a"), true),
            lock(0, 80, 90, release("a"), false),
        ];
        assert_linearizable(&Lock, &history);
        // Failing to acquire a free lock is not Consul's behaviour.
        assert_violation(&Lock, &[lock(0, 0, 10, acquire("a"), false)]);
    }

    #[test]
    fn lock_release_by_a_non_holder_changes_nothing() {
        let history = [
            lock(0, 0, 10, acquire("a"), true),
            lock(1, 20, 30, release("b"), false),
            lock(1, 40, 50, acquire("b"), false),
        ];
        assert_linearizable(&Lock, &history);
        let stolen = [
            lock(0, 0, 10, acquire("a"), true),
            lock(1, 20, 30, release("b"), true),
        ];
        assert_violation(&Lock, &stolen);
    }

    #[test]
    fn lock_unknown_acquire_must_have_taken_it() {
        // b's acquire got no answer, yet c finds the lock held after a released it.
        let history = [
            lock(0, 0, 10, acquire("a"), true),
            lock(0, 20, 30, release("a"), true),
            Operation::unknown(1, 40, acquire("b")),
            lock(2, 50, 60, acquire("c"), false),
        ];
        assert_linearizable(&Lock, &history);
        // Without it, nobody could hold the lock.
        let mut without = history.to_vec();
        without.remove(2);
        assert_violation(&Lock, &without);
    }

    #[test]
    fn partitioned_check_names_the_failing_part() {
        let good = vec![
            op(0, 0, 10, Write(1), Written),
            op(1, 20, 30, Read, Value(Some(1))),
        ];
        let bad = vec![
            op(0, 0, 10, Write(1), Written),
            op(1, 20, 30, Read, Value(Some(7))),
        ];
        let verdict = check_partitioned(
            &CasRegister,
            vec![("k1", good.clone()), ("k2", bad)],
            &Budget::default(),
        );
        match verdict {
            Verdict::NotLinearizable { explanation } => {
                assert!(explanation.starts_with("part \"k2\":"), "{explanation}");
                assert!(!explanation.contains("k1"), "{explanation}");
            }
            other => panic!("expected a violation, got {other}"),
        }
        let parts: std::collections::HashMap<String, Vec<RegisterOp>> =
            [("a".to_owned(), good.clone()), ("b".to_owned(), good)].into();
        assert_eq!(
            check_partitioned(&CasRegister, &parts, &Budget::default()),
            Verdict::Linearizable
        );
    }

    /// The definition, by brute force: some order of the known operations and some of the
    /// unknown ones, in which no operation comes before one that returned before it was
    /// called, that the model accepts.
    fn brute_force<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>]) -> bool {
        fn extend<M: Model>(
            model: &M,
            history: &[Operation<M::Input, M::Output>],
            placed: &mut Vec<bool>,
            state: &M::State,
        ) -> bool {
            let done =
                |placed: &[bool]| (0..history.len()).all(|i| placed[i] || !history[i].is_known());
            if done(placed) {
                return true;
            }
            for next in 0..history.len() {
                let blocked = (0..history.len()).any(|other| {
                    !placed[other]
                        && history[other]
                            .return_time()
                            .is_some_and(|ret| ret < history[next].call)
                });
                if placed[next] || blocked {
                    continue;
                }
                let op = &history[next];
                if let Some(after) = model.step(state, &op.input, &op.outcome) {
                    placed[next] = true;
                    let found = extend(model, history, placed, &after);
                    placed[next] = false;
                    if found {
                        return true;
                    }
                }
            }
            false
        }
        extend(
            model,
            history,
            &mut vec![false; history.len()],
            &model.init(),
        )
    }

    /// Random tiny histories, mostly not linearizable: random outputs, coarse times (many
    /// ties), a fifth with unknown outcomes.
    fn tiny_history<I, O>(
        rng: &mut Rng,
        mut operation: impl FnMut(&mut Rng) -> (I, O),
    ) -> Vec<Operation<I, O>> {
        let clients = 1 + rng.below(3) as usize;
        let mut history = Vec::new();
        for client in 0..clients {
            let mut t = rng.below(4);
            for _ in 0..=rng.below(3) {
                let (input, output) = operation(rng);
                let ret = t + rng.below(6);
                history.push(if rng.below(5) == 0 {
                    Operation::unknown(client, t, input)
                } else {
                    Operation::returned(client, t, ret, input, output)
                });
                t = ret + rng.below(3);
            }
        }
        history
    }

    /// Checks both search phases on their own against the brute force.
    fn cross_check<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>]) -> bool {
        let expected = brute_force(model, history);
        let budget = Budget::default();
        for quick_steps in [budget.max_steps, 0] {
            let verdict = Search::new(model, history, &budget).run(quick_steps);
            assert!(
                !matches!(verdict, Verdict::Unknown { .. }),
                "{verdict} for {history:#?}"
            );
            assert_eq!(
                verdict.is_linearizable(),
                expected,
                "quick steps {quick_steps}: {verdict} for {history:#?}"
            );
        }
        expected
    }

    #[test]
    fn agrees_with_brute_force_on_tiny_random_histories() {
        let mut rng = Rng(42);
        let mut linearizable = [0; 2];
        for _ in 0..3000 {
            let history = tiny_history(&mut rng, |rng| match rng.below(3) {
                0 => (Read, Value((rng.below(3) > 0).then(|| rng.below(2)))),
                1 => (Write(rng.below(2)), Written),
                _ => {
                    let cas = Cas {
                        expect: rng.below(2),
                        new: rng.below(2),
                    };
                    (cas, Applied(rng.below(2) == 0))
                }
            });
            linearizable[0] += usize::from(cross_check(&CasRegister, &history));
            let history = tiny_history(&mut rng, |rng| {
                let session = ["a", "b"][rng.below(2) as usize];
                let input = if rng.below(2) == 0 {
                    acquire(session)
                } else {
                    release(session)
                };
                (input, rng.below(2) == 0)
            });
            linearizable[1] += usize::from(cross_check(&Lock, &history));
        }
        // Both kinds of verdict were exercised, for both models.
        for count in linearizable {
            assert!((300..2700).contains(&count), "{linearizable:?} of 3000");
        }
    }

    #[test]
    fn both_search_phases_agree_on_medium_random_histories() {
        // Too long for the brute force, but the quick search and the rounds share little code
        // (the rounds rebuild the list for every configuration they take up again).
        let mut verdicts = [0; 2];
        for seed in 0..300 {
            let mut rng = Rng(seed);
            let clients = 2 + rng.below(3) as usize;
            let per_client = 3 + rng.below(12) as usize;
            let unknown_percent = rng.below(30);
            let slots = slots(&mut rng, clients, per_client, unknown_percent);
            let mut history = register_history(&mut rng, &slots, 3);
            // Corrupt up to two answers.
            for _ in 0..rng.below(3) {
                let victim = rng.below(history.len() as u64) as usize;
                if let Outcome::Returned(output) = &mut history[victim].outcome {
                    *output = match output {
                        Value(_) => Value(Some(rng.below(3))),
                        Written => Written,
                        Applied(applied) => Applied(!*applied),
                    };
                }
            }
            let budget = Budget::default();
            let quick = Search::new(&CasRegister, &history, &budget).run(budget.max_steps);
            let rounds = Search::new(&CasRegister, &history, &budget).run(0);
            assert!(
                !matches!(quick, Verdict::Unknown { .. }),
                "seed {seed}: {quick}"
            );
            assert_eq!(
                quick.is_linearizable(),
                rounds.is_linearizable(),
                "seed {seed}: {rounds}"
            );
            verdicts[usize::from(quick.is_linearizable())] += 1;
        }
        assert!(verdicts[0] > 30 && verdicts[1] > 30, "{verdicts:?}");
    }

    /// `SplitMix64`: small, seeded, good enough to shape test histories.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// When one simulated operation ran and when it really took effect.
    struct Slot {
        client: usize,
        call: u64,
        /// `None`: the client got no answer.
        ret: Option<u64>,
        /// `None`: it never took effect.
        effect: Option<u64>,
    }

    /// Sequential clients issuing operations with random, heavily overlapping intervals, each
    /// taking effect at a random instant inside its interval; `unknown_percent` of them get no
    /// answer and take effect later (possibly long after the client moved on) or never.
    fn slots(rng: &mut Rng, clients: usize, per_client: usize, unknown_percent: u64) -> Vec<Slot> {
        let mut slots = Vec::new();
        for client in 0..clients {
            let mut t = rng.below(50);
            for _ in 0..per_client {
                let call = t;
                let duration = 1 + rng.below(200);
                if rng.below(100) < unknown_percent {
                    let effect = (rng.below(2) == 0).then(|| call + rng.below(4 * duration));
                    slots.push(Slot {
                        client,
                        call,
                        ret: None,
                        effect,
                    });
                } else {
                    let effect = Some(call + rng.below(duration + 1));
                    slots.push(Slot {
                        client,
                        call,
                        ret: Some(call + duration),
                        effect,
                    });
                }
                t = call + duration + 1 + rng.below(50);
            }
        }
        slots
    }

    /// Runs `apply` on a real object in effect order and records what each client saw.
    fn simulate<I, O: Clone>(
        slots: &[Slot],
        inputs: Vec<I>,
        mut apply: impl FnMut(&I) -> O,
    ) -> Vec<Operation<I, O>> {
        let mut order: Vec<usize> = (0..slots.len())
            .filter(|&i| slots[i].effect.is_some())
            .collect();
        order.sort_by_key(|&i| (slots[i].effect, i));
        let mut outputs = vec![None; slots.len()];
        for i in order {
            outputs[i] = Some(apply(&inputs[i]));
        }
        inputs
            .into_iter()
            .zip(outputs)
            .zip(slots)
            .map(|((input, output), slot)| Operation {
                client: slot.client,
                call: slot.call,
                ret: slot.ret,
                input,
                outcome: match (slot.ret, output) {
                    (Some(_), Some(output)) => Outcome::Returned(output),
                    _ => Outcome::Unknown,
                },
            })
            .collect()
    }

    /// Operations on a real atomic register holding values below `values`, at `slots`: half
    /// reads, the rest writes and CASes.
    fn register_history(rng: &mut Rng, slots: &[Slot], values: u64) -> Vec<RegisterOp> {
        let inputs = (0..slots.len())
            .map(|_| match rng.below(10) {
                0..5 => Read,
                5..8 => Write(rng.below(values)),
                _ => Cas {
                    expect: rng.below(values),
                    new: rng.below(values),
                },
            })
            .collect();
        let mut value = None;
        simulate(slots, inputs, |input| match *input {
            Read => Value(value),
            Write(v) => {
                value = Some(v);
                Written
            }
            Cas { expect, new } => {
                let applies = value == Some(expect);
                if applies {
                    value = Some(new);
                }
                Applied(applies)
            }
        })
    }

    /// 4 clients × 300 operations, 2% with unknown outcomes. Few distinct values make many
    /// interleavings plausible, which is what makes the search work.
    fn random_register_history(seed: u64) -> Vec<RegisterOp> {
        let mut rng = Rng(seed);
        let slots = slots(&mut rng, 4, 300, 2);
        register_history(&mut rng, &slots, 5)
    }

    #[test]
    fn random_correct_register_histories_are_linearizable() {
        for seed in [1, 2, 3] {
            let history = random_register_history(seed);
            assert_eq!(history.len(), 1200);
            let unknown = history.iter().filter(|op| !op.is_known()).count();
            assert!(unknown > 0, "the generator should produce unknown outcomes");
            let started = Instant::now();
            let verdict = check(&CasRegister, &history);
            eprintln!(
                "seed {seed}: {} ops ({unknown} unknown): {verdict} in {:?}",
                history.len(),
                started.elapsed()
            );
            assert_eq!(verdict, Verdict::Linearizable, "seed {seed}");
        }
    }

    #[test]
    fn random_register_history_with_a_corrupted_read_is_not_linearizable() {
        for seed in [1, 2, 3] {
            let mut history = random_register_history(seed);
            // A read in the middle of the history (by call time) now sees a value nobody
            // ever wrote.
            let mut reads: Vec<usize> = (0..history.len())
                .filter(|&i| matches!(history[i].outcome, Outcome::Returned(Value(_))))
                .collect();
            reads.sort_by_key(|&i| history[i].call);
            let victim = reads[reads.len() / 2];
            history[victim].outcome = Outcome::Returned(Value(Some(99)));
            let started = Instant::now();
            let verdict = check(&CasRegister, &history);
            eprintln!(
                "seed {seed}, #{victim} corrupted: searched in {:?}",
                started.elapsed()
            );
            let Verdict::NotLinearizable { explanation } = verdict else {
                panic!("seed {seed}: expected a violation, got {verdict}");
            };
            assert!(
                explanation.contains(&format!("#{victim} client"))
                    && explanation.contains("Some(99)"),
                "{explanation}"
            );
        }
    }

    #[test]
    fn random_correct_lock_history_is_linearizable() {
        let mut rng = Rng(7);
        let slots = slots(&mut rng, 4, 300, 2);
        let inputs = slots
            .iter()
            .map(|slot| {
                let session = format!("s{}", slot.client);
                if rng.below(2) == 0 {
                    LockInput::Acquire(session)
                } else {
                    LockInput::Release(session)
                }
            })
            .collect();
        let mut holder: Option<String> = None;
        let history = simulate(&slots, inputs, |input| match input {
            LockInput::Acquire(s) => {
                let can = holder.as_ref().is_none_or(|h| h == s);
                if can {
                    holder = Some(s.clone());
                }
                can
            }
            LockInput::Release(s) => {
                let holds = holder.as_ref() == Some(s);
                if holds {
                    holder = None;
                }
                holds
            }
        });
        assert!(
            history
                .iter()
                .any(|op| op.outcome == Outcome::Returned(true))
        );
        let started = Instant::now();
        let verdict = check(&Lock, &history);
        eprintln!(
            "lock: {} ops: {verdict} in {:?}",
            history.len(),
            started.elapsed()
        );
        assert_eq!(verdict, Verdict::Linearizable);
    }

    #[test]
    fn exhausted_budget_gives_unknown_instead_of_an_answer() {
        let history = random_register_history(1);
        let budget = Budget {
            max_steps: 100,
            max_time: None,
        };
        match check_with(&CasRegister, &history, &budget) {
            Verdict::Unknown { reason } => assert!(reason.contains("100 model steps"), "{reason}"),
            other => panic!("expected unknown, got {other}"),
        }
    }
}
