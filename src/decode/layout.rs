//! Learned layouts of the objects [`Cursor::fields`](super::scan::Cursor::fields) reads.
//!
//! Debezium writes every object of one kind (a table's row images, the `source` block, the
//! envelope) with the same keys in the same order, and many of the members eavlake does not
//! want have the same value in every record (`"version":"2.7.3.Final"`, `"db":"eavstore"`,
//! `"xmin":null`). A layout is such an object as a series of steps: a run of bytes that must be
//! there as it is (separators, keys, blanks, and the members not wanted whose value has not
//! changed), then a value to read or to skip. Walking a layout checks each run with a few
//! 16-byte compares, where reading member by member guesses, checks and skips every member on
//! its own (about 90 instructions each; 40 members a record).
//!
//! A record that departs from every layout in any byte is read member by member, from the
//! start of its object, and teaches a layout: a new one for a new set of keys, or, for the same
//! keys, that a member it took as constant varies (skipped from then on). What a walk reads is
//! what reading member by member reads, since the bytes it compares are exactly those that
//! reading would have matched or passed over; so the reader given to `fields` may be called
//! twice for a member when a record departs partway (it stores what it reads, and the second
//! call stores the same).

use super::scan::KeyId;

/// At most this many layouts per kind of object (the three tables' row images; the envelopes
/// of changes, of transaction markers and of heartbeats).
const MAX_LAYOUTS: usize = 4;
/// Objects with more members are read member by member.
const MAX_MEMBERS: usize = 64;
/// Longer values of members not wanted are taken to vary (a layout keeps what it takes as
/// constant, and the bytes it compares).
const MAX_CONSTANT_BYTES: usize = 128;
/// A layout whose runs of bytes come to more (long keys) is not kept.
const MAX_LAYOUT_BYTES: usize = 4096;
/// After this many misses, layouts stop being used and learned for this kind of object when
/// they miss more than one object in eight (objects of ever new shapes).
const MISS_GRACE: u64 = 32;

/// What follows a step's run of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// A wanted member's value: the reader is called with this key id (and the step's name).
    Read(KeyId),
    /// The value of a member not wanted that varies.
    Skip,
    /// The run ends the object.
    End,
}

#[derive(Debug)]
pub(super) struct Step {
    /// The run of bytes, zero-padded to a multiple of 16 (compared sixteen at a time).
    pub lit: Box<[u8]>,
    pub len: usize,
    /// A bit for each byte of the run in the last sixteen of `lit`.
    pub last_bits: u32,
    pub action: Action,
    /// The key read (`Action::Read`), for the reader.
    pub name: Box<str>,
}

/// A member of an object to learn a layout from: its key, the key's id when the reader wants
/// it, and where its value starts and ends in the object's text.
pub(super) struct MemberSpan {
    pub key: String,
    pub wanted: Option<KeyId>,
    pub start: usize,
    pub end: usize,
}

/// A member of the object a layout was learned from.
#[derive(Debug, Clone)]
struct Member {
    key: Box<str>,
    /// The key's id when the reader wants it.
    wanted: Option<KeyId>,
    /// The value of a member not wanted taken as constant (empty for the others).
    value: Box<[u8]>,
    /// Not wanted, and seen with another value (or a number, an object, an array or a long
    /// value, which are taken to vary from the start).
    varies: bool,
}

#[derive(Debug)]
pub(super) struct Layout {
    pub steps: Vec<Step>,
    members: Vec<Member>,
}

impl Layout {
    /// The layout of `text`, an object of `members` (with each member's value span), taking
    /// every member not wanted as constant unless `varies` says otherwise.
    fn build(text: &str, members: Vec<Member>, spans: &[(usize, usize)]) -> Layout {
        let b = text.as_bytes();
        let mut steps = Vec::new();
        let mut from = 0;
        for (m, &(start, end)) in members.iter().zip(spans) {
            let (action, name) = match (m.wanted, m.varies) {
                (Some(id), _) => (Action::Read(id), &*m.key),
                (None, true) => (Action::Skip, ""),
                (None, false) => continue,
            };
            steps.push(step(&b[from..start], action, name));
            from = end;
        }
        steps.push(step(&b[from..], Action::End, ""));
        Layout { steps, members }
    }

    fn same_keys(&self, members: &[Member]) -> bool {
        self.members.len() == members.len() && self.members.iter().zip(members).all(|(a, b)| a.key == b.key)
    }
}

fn step(run: &[u8], action: Action, name: &str) -> Step {
    let mut lit = run.to_vec();
    let padded = run.len().div_ceil(16).max(1) * 16;
    lit.resize(padded, 0);
    let in_last = run.len() + 16 - padded;
    Step { lit: lit.into(), len: run.len(), last_bits: ((1u64 << in_last) - 1) as u32, action, name: name.into() }
}

/// The layouts of one kind of object, most used first.
#[derive(Debug, Default)]
pub(super) struct Layouts {
    pub list: Vec<Layout>,
    hits: u64,
    misses: u64,
    off: bool,
}

impl Layouts {
    /// Whether layouts are walked for this kind of object.
    #[inline(always)]
    pub fn active(&self) -> bool {
        !self.off
    }

    /// Objects read by a layout.
    #[cfg(test)]
    pub fn hits(&self) -> usize {
        self.hits as usize
    }

    /// Layout `i` read an object.
    #[inline(always)]
    pub fn hit(&mut self, i: usize) {
        self.hits += 1;
        if i > 0 {
            // Move toward the front, so that the kind most often seen is tried first.
            self.list.swap(i, i - 1);
        }
    }

    /// No layout read `text` (an object just read member by member, so well formed): learns
    /// its layout. `parse` lists its members, with the id of each wanted key and the span
    /// of each value within `text`; `None` when it cannot be laid out.
    pub fn missed(&mut self, text: &str, parse: impl FnOnce(&str) -> Option<Vec<MemberSpan>>) {
        self.misses += 1;
        if self.misses > MISS_GRACE && self.misses * 8 > self.hits {
            self.off = true;
            self.list = Vec::new();
            return;
        }
        let Some(parsed) = parse(text).filter(|m| m.len() <= MAX_MEMBERS) else { return };
        let b = text.as_bytes();
        let spans: Vec<(usize, usize)> = parsed.iter().map(|m| (m.start, m.end)).collect();
        let mut members: Vec<Member> = parsed
            .into_iter()
            .map(|MemberSpan { key, wanted, start, end }| {
                let value = &b[start..end];
                // Numbers (times, positions), objects and arrays are taken to vary.
                let constant = wanted.is_none()
                    && value.len() <= MAX_CONSTANT_BYTES
                    && matches!(value.first(), Some(b'"' | b'n' | b't' | b'f'));
                let value = if constant { value.into() } else { Box::default() };
                Member { key: key.into(), wanted, value, varies: !constant }
            })
            .collect();
        // The same keys as a layout known: the members whose value changed vary from now on.
        let known = self.list.iter().position(|l| l.same_keys(&members));
        if let Some(i) = known {
            for (m, old) in members.iter_mut().zip(&self.list[i].members) {
                m.varies |= old.varies || old.value != m.value;
            }
            self.list.remove(i);
        } else if self.list.len() == MAX_LAYOUTS {
            self.list.pop();
        }
        let layout = Layout::build(text, members, &spans);
        if layout.steps.iter().map(|s| s.len).sum::<usize>() <= MAX_LAYOUT_BYTES {
            self.list.insert(0, layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(text: &str, wanted: &[&str]) -> Option<Vec<MemberSpan>> {
        let mut c = super::super::scan::Cursor::new(text);
        let mut out = Vec::new();
        c.object(|c, key| {
            let (start, end) = c.value_span()?;
            let id = wanted.iter().position(|w| *w == key).map(|p| p as KeyId + 1);
            out.push(MemberSpan { key: key.into_owned(), wanted: id, start, end });
            Ok(())
        })
        .ok()?;
        Some(out)
    }

    fn runs(l: &Layout) -> Vec<(String, Action)> {
        l.steps.iter().map(|s| (String::from_utf8_lossy(&s.lit[..s.len]).into_owned(), s.action)).collect()
    }

    #[test]
    fn constants_join_the_runs_until_they_vary() {
        let mut layouts = Layouts::default();
        let first = r#"{"v":"2.7","ts":17,"t":"x","db":"e","lsn":5}"#;
        let wanted = ["t", "lsn"];
        layouts.missed(first, |t| members(t, &wanted));
        let s = |r: &str, a| (r.to_string(), a);
        assert_eq!(
            runs(&layouts.list[0]),
            vec![
                s(r#"{"v":"2.7","ts":"#, Action::Skip),
                s(r#","t":"#, Action::Read(1)),
                s(r#","db":"e","lsn":"#, Action::Read(2)),
                s("}", Action::End)
            ]
        );
        // `db` changed: it varies from now on; the keys are the same, so still one layout.
        layouts.missed(r#"{"v":"2.7","ts":18,"t":"y","db":"f","lsn":6}"#, |t| members(t, &wanted));
        assert_eq!(layouts.list.len(), 1);
        assert_eq!(runs(&layouts.list[0])[2], s(r#","db":"#, Action::Skip));
        assert_eq!(runs(&layouts.list[0])[3], s(r#","lsn":"#, Action::Read(2)));
        // Other keys: a layout of their own, tried first.
        layouts.missed(r#"{"t":"z"}"#, |t| members(t, &wanted));
        assert_eq!(layouts.list.len(), 2);
        assert_eq!(runs(&layouts.list[0]), vec![s(r#"{"t":"#, Action::Read(1)), s("}", Action::End)]);
        assert!(layouts.list.iter().all(|l| l.steps.iter().all(|s| s.lit.len() % 16 == 0)));
    }

    /// What a layout keeps is bounded: long values vary, long keys are not laid out.
    #[test]
    fn long_values_vary_and_long_keys_are_not_kept() {
        let mut layouts = Layouts::default();
        let long = "x".repeat(MAX_CONSTANT_BYTES);
        layouts.missed(&format!(r#"{{"v":"{long}","t":1}}"#), |t| members(t, &["t"]));
        let s = |r: &str, a| (r.to_string(), a);
        assert_eq!(runs(&layouts.list[0])[0], s(r#"{"v":"#, Action::Skip));
        let mut layouts = Layouts::default();
        let key = "k".repeat(MAX_LAYOUT_BYTES);
        layouts.missed(&format!(r#"{{"{key}":1,"t":1}}"#), |t| members(t, &["t"]));
        assert!(layouts.list.is_empty());
    }

    #[test]
    fn objects_of_ever_new_shapes_turn_layouts_off() {
        let mut layouts = Layouts::default();
        for i in 0..100 {
            let text = format!(r#"{{"k{i}":1}}"#);
            layouts.missed(&text, |t| members(t, &[]));
            assert!(layouts.list.len() <= MAX_LAYOUTS);
        }
        assert!(!layouts.active());
        assert!(layouts.list.is_empty());
    }
}
