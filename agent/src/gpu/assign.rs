//! Which GPUs a task gets. Pure. Batch gives every task all GPUs; berth does the same with
//! one task slot, and with several it gives each running task whole GPUs of its own, so
//! that tasks side by side do not share a GPU by accident.

use super::Reservation;

/// The task environment variable that asks for a number of GPUs (`0`, `1`, ... or `all`).
pub const REQUEST_ENV: &str = "BERTH_GPUS";

/// What a task needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Nothing,
    /// Every GPU, held by nobody: fewer GPUs than slots and no request.
    Shared,
    /// This many whole GPUs that no other running task holds.
    Whole(u32),
}

/// The need of a task that asks for `request` (`BERTH_GPUS`, if set) and takes
/// `required_slots` of `slots_per_node`, on a node with `total` GPUs.
///
/// No request: `per_slot` GPUs per slot when configured; else with one slot all GPUs;
/// else an equal share (`total / slots` per slot), or all GPUs shared when there are fewer
/// GPUs than slots.
pub fn need(
    request: Option<&str>,
    required_slots: u32,
    slots_per_node: u32,
    total: u32,
    per_slot: Option<u32>,
) -> Result<Need, String> {
    if let Some(r) = request.map(str::trim) {
        let n = if r.eq_ignore_ascii_case("all") {
            total
        } else {
            r.parse::<u32>().map_err(|_| {
                format!("{REQUEST_ENV}={r:?} is not a number of GPUs; use 0, 1, 2, ... or all")
            })?
        };
        if n > total {
            return Err(format!(
                "{REQUEST_ENV}={r} asks for {n} GPUs; this node has {total}"
            ));
        }
        return Ok(if n == 0 {
            Need::Nothing
        } else {
            Need::Whole(n)
        });
    }
    if total == 0 {
        return Ok(Need::Nothing);
    }
    let slots = required_slots.max(1);
    let n = match per_slot {
        Some(p) => p.saturating_mul(slots).min(total),
        None if slots_per_node <= 1 => total,
        None => match total / slots_per_node {
            0 => return Ok(Need::Shared),
            share => share.saturating_mul(slots).min(total),
        },
    };
    Ok(if n == 0 {
        Need::Nothing
    } else {
        Need::Whole(n)
    })
}

/// Which GPUs running tasks hold.
#[derive(Debug, Clone)]
pub struct Holdings {
    held: Vec<bool>,
}

impl Holdings {
    pub fn new(gpus: usize) -> Self {
        Holdings {
            held: vec![false; gpus],
        }
    }

    /// Takes what `need` asks for, the lowest free GPUs first; `None` when not enough are
    /// free now.
    pub fn take(&mut self, need: Need) -> Option<Reservation> {
        match need {
            Need::Nothing => Some(Reservation::default()),
            Need::Shared => Some(Reservation {
                gpus: (0..self.held.len()).collect(),
                exclusive: false,
            }),
            Need::Whole(n) => {
                let free: Vec<usize> = (0..self.held.len()).filter(|i| !self.held[*i]).collect();
                if free.len() < n as usize {
                    return None;
                }
                let gpus: Vec<usize> = free.into_iter().take(n as usize).collect();
                for i in &gpus {
                    self.held[*i] = true;
                }
                Some(Reservation {
                    gpus,
                    exclusive: true,
                })
            }
        }
    }

    /// Marks these GPUs held, whatever they were.
    pub fn hold(&mut self, gpus: &[usize]) {
        for i in gpus {
            if let Some(h) = self.held.get_mut(*i) {
                *h = true;
            }
        }
    }

    pub fn give_back(&mut self, gpus: &[usize]) {
        for i in gpus {
            if let Some(h) = self.held.get_mut(*i) {
                *h = false;
            }
        }
    }

    pub fn free(&self) -> usize {
        self.held.iter().filter(|h| !**h).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Need::*;

    #[test]
    fn needs() {
        // (request, required slots, slots per node, GPUs, per slot) -> need
        type Row<'a> = (Option<&'a str>, u32, u32, u32, Option<u32>, Need);
        let table: &[Row<'_>] = &[
            (None, 1, 1, 0, None, Nothing),
            (None, 1, 1, 4, None, Whole(4)),
            (None, 1, 4, 4, None, Whole(1)),
            (None, 2, 4, 4, None, Whole(2)),
            (None, 1, 4, 8, None, Whole(2)),
            (None, 1, 3, 4, None, Whole(1)),
            (None, 1, 8, 4, None, Shared),
            (None, 1, 8, 4, Some(1), Whole(1)),
            (None, 4, 8, 4, Some(2), Whole(4)),
            (None, 1, 4, 4, Some(0), Nothing),
            (Some("2"), 1, 4, 4, None, Whole(2)),
            (Some(" all "), 1, 4, 4, None, Whole(4)),
            (Some("0"), 1, 1, 4, None, Nothing),
            (Some("0"), 1, 1, 0, None, Nothing),
        ];
        for (req, rs, spn, total, per, want) in table {
            assert_eq!(
                need(*req, *rs, *spn, *total, *per).unwrap(),
                *want,
                "{req:?} {rs} {spn} {total} {per:?}"
            );
        }
        let e = need(Some("5"), 1, 1, 4, None).unwrap_err();
        assert_eq!(e, "BERTH_GPUS=5 asks for 5 GPUs; this node has 4");
        let e = need(Some("two"), 1, 1, 4, None).unwrap_err();
        assert!(e.contains("\"two\" is not a number"), "{e}");
        assert!(need(Some("1"), 1, 1, 0, None).is_err());
    }

    #[test]
    fn holdings_give_whole_gpus_once() {
        let mut h = Holdings::new(4);
        let a = h.take(Whole(2)).unwrap();
        assert_eq!(a.gpus, vec![0, 1]);
        let b = h.take(Whole(1)).unwrap();
        assert_eq!(b.gpus, vec![2]);
        assert!(h.take(Whole(2)).is_none(), "only one is free");
        let s = h.take(Shared).unwrap();
        assert_eq!((s.gpus.len(), s.exclusive), (4, false));
        h.give_back(&a.gpus);
        assert_eq!(h.free(), 3);
        assert_eq!(h.take(Whole(3)).unwrap().gpus, vec![0, 1, 3]);
        assert_eq!(h.take(Nothing).unwrap(), Reservation::default());
    }
}
