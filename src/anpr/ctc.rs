//! Greedy CTC decoding of a recogniser's per-step class probabilities.

use crate::plate::Char;

/// A recogniser's alphabet: class 0 is the CTC blank, then the dictionary, then (optionally) space.
#[derive(Debug, Clone)]
pub struct Alphabet {
    chars: Vec<char>,
}

impl Alphabet {
    /// From the dictionary text (one symbol per line), appending the space class.
    pub fn from_lines(text: &str) -> Self {
        let mut chars: Vec<char> = text.lines().filter_map(|l| l.chars().next()).collect();
        chars.push(' ');
        Self { chars }
    }

    /// The number of classes the model must output (blank included).
    pub fn classes(&self) -> usize {
        self.chars.len() + 1
    }

    /// Decode `steps` × `classes` probabilities: best class per step, repeats merged, blanks dropped.
    pub fn decode(&self, probs: &[f32], classes: usize) -> Vec<Char> {
        let mut out: Vec<Char> = Vec::new();
        let mut prev = 0usize;
        for (step, row) in probs.chunks_exact(classes).enumerate() {
            let (best, p) = row.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
            if best == 0 {
                prev = 0;
                continue;
            }
            let at = |ch: char| Char { ch, prob: p, step, blank: row[0], alts: self.runners_up(row, best) };
            if best == prev {
                // The same symbol held over several steps: keep its peak.
                if let Some(last) = out.last_mut().filter(|c| p > c.prob) {
                    *last = at(last.ch);
                }
            } else if let Some(&ch) = self.chars.get(best - 1) {
                out.push(at(ch));
            }
            prev = best;
        }
        out
    }

    /// The two most likely non-blank classes other than `best`.
    fn runners_up(&self, row: &[f32], best: usize) -> [(char, f32); 2] {
        let mut top = [(' ', 0f32); 2];
        for (i, &v) in row.iter().enumerate().skip(1) {
            if i == best {
                continue;
            }
            let Some(&ch) = self.chars.get(i - 1) else { continue };
            if v > top[0].1 {
                top = [(ch, v), top[0]];
            } else if v > top[1].1 {
                top[1] = (ch, v);
            }
        }
        top
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_merge_and_blanks_split_them() {
        let alphabet = Alphabet::from_lines("A\nB\n");
        let k = alphabet.classes();
        assert_eq!(k, 4);
        // Steps: A A blank A B B space.
        let steps = [1, 1, 0, 1, 2, 2, 3];
        let mut probs = vec![0.0; steps.len() * k];
        for (t, &c) in steps.iter().enumerate() {
            probs[t * k + c] = 0.6 + t as f32 * 0.05;
        }
        let text: String = alphabet.decode(&probs, k).iter().map(|c| c.ch).collect();
        assert_eq!(text, "AAB ");
        let chars = alphabet.decode(&probs, k);
        assert_eq!(chars[0].step, 1, "peak of the first run");
        assert!((chars[2].prob - 0.85).abs() < 1e-6);
        assert_eq!(chars[2].prob_of('B'), chars[2].prob);
        assert_eq!(chars[2].prob_of('Z'), 0.0);
    }
}
