//! Per-track consensus: several reads of one vehicle's plate vote per character position,
//! weighted by the recogniser's confidence.

use crate::plate::PlateText;

/// The result of a vote.
#[derive(Debug, Clone, PartialEq)]
pub struct Voted {
    pub plate: String,
    /// The weakest position's share: its winning character's weight over the reads that voted.
    pub confidence: f32,
    /// Reads that voted (those of the winning length).
    pub reads: usize,
    /// Whether any read that voted is a serial ([`PlateText::is_serial`]); otherwise the plate is
    /// a word, which only a vanity plate is.
    pub serial: bool,
}

/// The reads of one track so far.
#[derive(Debug, Clone, Default)]
pub struct Consensus {
    reads: Vec<PlateText>,
}

impl Consensus {
    /// Add one read.
    pub fn add(&mut self, read: PlateText) {
        self.reads.push(read);
    }

    /// Take in another track's reads of the same plate.
    pub fn merge(&mut self, other: &Consensus) {
        self.reads.extend(other.reads.iter().cloned());
    }

    /// Vote: the length with the most confidence behind it wins, then each position takes the
    /// character with the most confidence summed over the reads of that length.
    pub fn vote(&self) -> Option<Voted> {
        let mut reads = self.reads.clone();
        crate::plate::excise_marks(&mut reads);
        let mut by_len: Vec<(usize, f32)> = Vec::new();
        for r in &reads {
            match by_len.iter_mut().find(|(n, _)| *n == r.text.len()) {
                Some((_, w)) => *w += r.confidence,
                None => by_len.push((r.text.len(), r.confidence)),
            }
        }
        let (len, _) = by_len.into_iter().max_by(|a, b| a.1.total_cmp(&b.1))?;
        let group: Vec<&PlateText> = reads.iter().filter(|r| r.text.len() == len).collect();
        let mut plate = String::with_capacity(len);
        let mut confidence = 1.0f32;
        for i in 0..len {
            let mut weights: Vec<(char, f32)> = Vec::new();
            for r in &group {
                let ch = r.text.as_bytes()[i] as char;
                let p = r.probs.get(i).copied().unwrap_or(r.confidence);
                match weights.iter_mut().find(|(c, _)| *c == ch) {
                    Some((_, w)) => *w += p,
                    None => weights.push((ch, p)),
                }
            }
            let (ch, w) = weights.into_iter().max_by(|a, b| a.1.total_cmp(&b.1))?;
            plate.push(ch);
            confidence = confidence.min(w / group.len() as f32);
        }
        Some(Voted { plate, confidence, reads: group.len(), serial: group.iter().any(|r| r.is_serial()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, p: f32) -> PlateText {
        PlateText::sample(text, &vec![p; text.len()])
    }

    #[test]
    fn positions_vote_by_confidence_and_odd_lengths_drop_out() {
        let mut c = Consensus::default();
        for r in [read("RK755AJ", 0.9), read("RK7S5AJ", 0.6), read("RK755AJ", 0.8), read("K755AJ", 0.95)] {
            c.add(r);
        }
        let v = c.vote().unwrap();
        assert_eq!(v.plate, "RK755AJ");
        assert_eq!(v.reads, 3);
        // Position 3 is split 1.7 to 0.6 over three reads: 1.7 / 3 is the weakest share.
        assert!((v.confidence - 1.7 / 3.0).abs() < 1e-5, "{}", v.confidence);
    }

    #[test]
    fn an_emblem_read_as_an_unsure_glyph_does_not_outvote_a_sure_read_without_it() {
        // A live camera's four reads of Arizona's `91A·4ZA`: the three with the emblem as an N
        // outweighed the one sure read by length, and the event went out as `91AN4ZA`.
        let mut c = Consensus::default();
        c.add(PlateText::sample("91A4ZA", &[0.954, 0.99, 0.99, 0.99, 0.99, 0.99]));
        for p in [0.366, 0.614, 0.614] {
            c.add(PlateText::sample("91AN4ZA", &[0.99, 0.99, 0.99, p, 0.99, 0.99, 0.99]));
        }
        let v = c.vote().unwrap();
        assert_eq!((v.plate.as_str(), v.reads), ("91A4ZA", 4));
    }

    #[test]
    fn no_reads_no_vote() {
        assert!(Consensus::default().vote().is_none());
    }
}
