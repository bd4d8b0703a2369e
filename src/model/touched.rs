//! Where an edit changed a configuration, when the edit knows it: the backends it replaced,
//! appended or removed, by position. The service's commit, its diff and the engine then look
//! there, instead of comparing the two configurations' lists: even comparing only the leaves
//! two versions of a list do not share visits every leaf of a farm of 60,000 backends (about a
//! thousand, each a cache miss once the daemon has been idle), and a change did that several
//! times.

use super::Config;

/// What changed between a configuration and the one an edit made of it. Anything but
/// [`Touched::Unknown`] promises that nothing else changed: the farm and policy lists, the farms'
/// own keys and every other backend are as they were (debug builds check it on each commit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Touched {
    /// Not said: compare the configurations.
    #[default]
    Unknown,
    /// Backends replaced in place (each keeping its name): by farm position, each farm once and
    /// in order, with its backend positions in order. A backend may be replaced by an equal one.
    Backends(Vec<(usize, Vec<usize>)>),
    /// One backend appended to the farm at this position.
    Appended { farm: usize },
    /// The backend at `at` of the farm at `farm` removed (in the old configuration).
    Removed { farm: usize, at: usize },
}

impl Touched {
    /// One backend replaced in place.
    pub fn backend(farm: usize, at: usize) -> Touched {
        Touched::Backends(vec![(farm, vec![at])])
    }

    /// Backends replaced in place, given as (farm, backend) positions in any order, each once.
    pub fn backends(mut at: Vec<(usize, usize)>) -> Touched {
        at.sort_unstable();
        let mut farms: Vec<(usize, Vec<usize>)> = Vec::new();
        for (f, b) in at {
            match farms.last_mut() {
                Some((last, bs)) if *last == f => bs.push(b),
                _ => farms.push((f, vec![b])),
            }
        }
        Touched::Backends(farms)
    }

    /// Whether `new` is `old` again (the edit changed nothing): O(touched) when known.
    pub fn unchanged(&self, old: &Config, new: &Config) -> bool {
        match self {
            Touched::Unknown => old == new,
            Touched::Backends(farms) => farms.iter().all(|(f, bs)| {
                bs.iter()
                    .all(|b| old.farms[*f].backends.get(*b) == new.farms[*f].backends.get(*b))
            }),
            Touched::Appended { .. } | Touched::Removed { .. } => false,
        }
    }

    /// Whether the promise holds: `new` differs from `old` only where said. O(configuration):
    /// for debug builds and tests (not counted as passes over the farms).
    pub fn agrees(&self, old: &Config, new: &Config) -> bool {
        super::uncounted(|| self.agrees_counted(old, new))
    }

    fn agrees_counted(&self, old: &Config, new: &Config) -> bool {
        let same_outside = |farm: usize| {
            old.policies == new.policies
                && old.farms.len() == new.farms.len()
                && (0..old.farms.len())
                    .filter(|i| *i != farm)
                    .all(|i| old.farms[i] == new.farms[i])
                && old.farms[farm].without_backends() == new.farms[farm].without_backends()
        };
        match self {
            Touched::Unknown => true,
            Touched::Backends(farms) => {
                let listed = |f: usize| farms.iter().find(|(i, _)| *i == f).map(|(_, bs)| bs);
                old.policies == new.policies
                    && old.farms.len() == new.farms.len()
                    && (0..old.farms.len()).all(|f| {
                        let (o, n) = (&old.farms[f], &new.farms[f]);
                        let Some(bs) = listed(f) else {
                            return o == n;
                        };
                        o.without_backends() == n.without_backends()
                            && o.backends.len() == n.backends.len()
                            && (0..o.backends.len()).all(|b| {
                                let (x, y) = (&o.backends[b], &n.backends[b]);
                                if bs.contains(&b) { x.name == y.name } else { x == y }
                            })
                    })
            }
            Touched::Appended { farm } => {
                let (o, n) = (&old.farms[*farm], &new.farms[*farm]);
                same_outside(*farm)
                    && n.backends.len() == o.backends.len() + 1
                    && o.backends.iter().zip(n.backends.iter()).all(|(x, y)| x == y)
            }
            Touched::Removed { farm, at } => {
                let (o, n) = (&old.farms[*farm], &new.farms[*farm]);
                same_outside(*farm)
                    && o.backends.len() == n.backends.len() + 1
                    && (0..n.backends.len())
                        .all(|b| n.backends[b] == o.backends[if b < *at { b } else { b + 1 }])
            }
        }
    }
}
