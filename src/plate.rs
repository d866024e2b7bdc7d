//! Plate text: from recognised characters to a plate. Normalisation, plate-likeness, format
//! rules with positional confusion fixes, and known plates. A leaf: it imports nothing of ours,
//! so config can check the formats a user writes without depending on the models that read.

use regex::{Regex, RegexSet};

/// One decoded character with its probability at the step where it peaked, and what else the
/// recogniser considered there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Char {
    pub ch: char,
    pub prob: f32,
    pub step: usize,
    /// The blank's probability at that step: how readily the character could be dropped.
    pub blank: f32,
    /// The runners-up at that step, most likely first.
    pub alts: [(char, f32); 2],
}

impl Char {
    /// The probability the recogniser gave `ch` at this character's step (0 if not a runner-up).
    pub fn prob_of(&self, ch: char) -> f32 {
        if ch == self.ch { self.prob } else { self.alts.iter().find(|a| a.0 == ch).map_or(0.0, |a| a.1) }
    }
}

/// Upper-case A–Z and 0–9 only.
pub fn normalise(text: &str) -> String {
    text.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_uppercase()).collect()
}

/// The longest plate serials (Germany's, several US states') have eight characters.
pub const LONGEST_PLATE: usize = 8;
/// Built-in formats by country, and regions as lists of countries.
const PRESETS: &[(&str, &[&str])] = &[
    ("it", &["[A-Z]{2}[0-9]{3}[A-Z]{2}"]),
    ("fr", &["[A-Z]{2}[0-9]{3}[A-Z]{2}"]),
    ("hr", &["[A-Z]{2}[0-9]{3,4}[A-Z]{1,2}"]),
    ("es", &["[0-9]{4}[A-Z]{3}"]),
    ("gb", &["[A-Z]{2}[0-9]{2}[A-Z]{3}"]),
    ("de", &["[A-Z]{1,3}[A-Z]{1,2}[0-9]{1,4}[EH]?"]),
    ("cz", &["[0-9][A-Z][0-9A-Z][0-9]{4}", "[A-Z]{3}[0-9]{4}"]),
    // The last: diplomatic and consular plates, a city letter and six digits (white on blue).
    (
        "pl",
        &[
            "[A-Z]{2}[0-9]{5}",
            "[A-Z]{2}[0-9]{4}[A-Z]",
            "[A-Z]{2}[0-9]{3}[A-Z]{2}",
            "[A-Z]{3}[0-9]{4,5}",
            "[A-Z][0-9]{6}",
        ],
    ),
    ("br", &["[A-Z]{3}[0-9]{4}", "[A-Z]{3}[0-9][A-Z][0-9]{2}"]),
    ("sk", &["[A-Z]{2}[0-9]{3}[A-Z]{2}"]),
    ("eu", &["it", "fr", "hr", "es", "gb", "de", "cz", "pl", "sk"]),
    // The commonest state serials; vanity plates fit none and are read as they are.
    ("us", &["[0-9][A-Z]{3}[0-9]{3}", "[A-Z]{3}[0-9]{3,4}", "[0-9]{3}[A-Z]{3}", "[A-Z]{2}[0-9]{4,5}"]),
];

/// Letters a recogniser mistakes for digits and back; only swapped when a format needs it.
const CONFUSIONS: &[(char, char)] = &[
    ('O', '0'),
    ('D', '0'),
    ('Q', '0'),
    ('I', '1'),
    ('B', '8'),
    ('S', '5'),
    ('Z', '2'),
    ('G', '6'),
    ('A', '4'),
    ('T', '7'),
];
/// Twins that plate fonts draw alike: the recogniser's split between them is a guess about the
/// class, not doubt about the shape, so a format's choice between them keeps both shares.
const SAME_GLYPH: &[(char, char)] = &[('O', '0'), ('I', '1')];
/// Characters a fit may drop (an emblem or sticker read as a character, a band letter).
const MAX_DROPS: usize = 2;
/// The cost of dropping a character on top of its log-probability over the blank's.
const DROP_COST: f32 = 1.5;
/// A character read at least this sure is believed: a format never drops it (it may still become
/// a twin the recogniser gave weight), since the recogniser saw a glyph there and a format that
/// needs it gone is another series' format; stray glyphs (seals, stickers, band letters) read
/// unsure. A track's vote is sure once its weakest character is. Without the drop bar, the `eu`
/// preset took the leading digit off US plates whose first step had the blank as runner-up
/// (`6LSU216` read `LSU216`).
pub const SURE: f32 = 0.9;
/// The cost of a twin other than a character's first (0 is far more often O than D or Q).
const RARE_TWIN_COST: f32 = 1.0;
/// A fit dearer than this (in log-probability) is not believed: the text is not that format.
/// A sure character may change only to a twin the recogniser gave some weight, and an unsure one
/// may be dropped only when the blank was its runner-up ([`SURE`] ones never are). With 10, a
/// wrong region's preset bent Croatian plates into a US series by dropping a sure letter (EU
/// under `us`: 84 % against 88 % with none); at 7.5 no preset reads a dev set worse than none by
/// more than two points.
const MAX_FIT_COST: f32 = 7.5;
/// A fit whose least sure character is less sure than this share of the read's own is refused:
/// without it, the wrong region's preset read the US set at 46 % against 70 % with none.
const FIT_KEEP: f32 = 0.8;
/// The floor for probabilities in costs.
const P_FLOOR: f32 = 1e-4;

/// What else a character may be taken for: its letter or digit twins, with their extra cost.
fn twins(c: char) -> impl Iterator<Item = (char, f32)> {
    CONFUSIONS
        .iter()
        .filter_map(move |&(l, d)| {
            if c == l {
                Some(d)
            } else if c == d {
                Some(l)
            } else {
                None
            }
        })
        .enumerate()
        .map(|(i, t)| (t, if i == 0 { 0.0 } else { RARE_TWIN_COST }))
}

/// A camera's plate formats, anchored regular expressions over normalised text.
#[derive(Debug, Clone, Default)]
pub struct Formats(Option<RegexSet>);

impl Formats {
    /// Compile a format list: regular expressions, country codes or regions (see `PRESETS`).
    pub fn parse(list: &[String]) -> Result<Self, String> {
        fn expand(item: &str, out: &mut Vec<String>) {
            match PRESETS.iter().find(|(name, _)| *name == item) {
                Some((_, items)) => items.iter().for_each(|i| expand(i, out)),
                None => out.push(format!("^(?:{item})$")),
            }
        }
        let mut patterns = Vec::new();
        for item in list {
            let mut own = Vec::new();
            expand(item, &mut own);
            for p in &own {
                Regex::new(p).map_err(|e| format!("plate format `{item}`: {e}"))?;
            }
            patterns.extend(own);
        }
        if patterns.is_empty() {
            return Ok(Self(None));
        }
        RegexSet::new(&patterns).map(|s| Self(Some(s))).map_err(|e| e.to_string())
    }

    /// Whether no format is configured (every plausible text is accepted as read).
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The most likely variant of `chars` that fits a format: confusable characters swapped and
    /// up to two characters dropped, each change costing the log-probability it gives up.
    pub fn fit(&self, chars: &[Char]) -> Option<Vec<Char>> {
        let set = self.0.as_ref()?;
        if chars.len() > 10 {
            return None;
        }
        let ln = |p: f32| p.max(P_FLOOR).ln();
        let mut best: Option<(f32, Vec<Char>)> = None;
        for drops in 0..=MAX_DROPS.min(chars.len()) {
            for dropped in combinations(chars.len(), drops) {
                if dropped.iter().any(|&i| chars[i].prob >= SURE) {
                    continue;
                }
                let base: f32 = dropped.iter().map(|&i| DROP_COST + ln(chars[i].prob) - ln(chars[i].blank)).sum();
                let kept: Vec<Char> =
                    chars.iter().enumerate().filter(|(i, _)| !dropped.contains(i)).map(|(_, c)| *c).collect();
                // Each position: the character as read, or one of its twins at its own cost.
                let options: Vec<Vec<(char, f32)>> = kept
                    .iter()
                    .map(|c| {
                        std::iter::once((c.ch, 0.0))
                            .chain(twins(c.ch).map(|(t, extra)| (t, extra + ln(c.prob) - ln(c.prob_of(t)))))
                            .collect()
                    })
                    .collect();
                let limit = best.as_ref().map_or(MAX_FIT_COST, |b| b.0);
                if let Some((cost, text)) = cheapest_match(set, &options, base, limit) {
                    let mut variant = kept;
                    for (c, t) in variant.iter_mut().zip(text.chars()) {
                        if c.ch != t {
                            let same = SAME_GLYPH.iter().any(|&(a, b)| (a, b) == (c.ch, t) || (b, a) == (c.ch, t));
                            c.prob = if same { (c.prob + c.prob_of(t)).min(1.0) } else { c.prob_of(t) };
                            c.ch = t;
                        }
                    }
                    best = Some((cost, variant));
                }
            }
        }
        best.map(|(_, v)| v)
    }
}

/// All ways to choose `k` of `n` indices.
fn combinations(n: usize, k: usize) -> Vec<Vec<usize>> {
    if k == 0 {
        return vec![Vec::new()];
    }
    (0..n)
        .flat_map(|first| {
            combinations(n, k - 1).into_iter().filter(move |rest| rest.first().is_none_or(|&r| r > first)).map(
                move |mut rest| {
                    rest.insert(0, first);
                    rest
                },
            )
        })
        .collect()
}

/// The cheapest text (below `limit`) spelled by one option per position that a format matches.
fn cheapest_match(set: &RegexSet, options: &[Vec<(char, f32)>], base: f32, limit: f32) -> Option<(f32, String)> {
    let mut best: Option<(f32, String)> = None;
    let mut pick = vec![0usize; options.len()];
    loop {
        let cost = base + pick.iter().zip(options).map(|(&i, o)| o[i].1).sum::<f32>();
        if cost < best.as_ref().map_or(limit, |b| b.0) {
            let text: String = pick.iter().zip(options).map(|(&i, o)| o[i].0).collect();
            if set.is_match(&text) {
                best = Some((cost, text));
            }
        }
        // Next combination, odometer-style.
        let mut pos = 0;
        loop {
            if pos == options.len() {
                return best;
            }
            pick[pos] += 1;
            if pick[pos] < options[pos].len() {
                break;
            }
            pick[pos] = 0;
            pos += 1;
        }
    }
}

/// A plate read from one text line.
#[derive(Debug, Clone, PartialEq)]
pub struct PlateText {
    /// Normalised, format-fixed text.
    pub text: String,
    /// Per-character probabilities, aligned with `text`.
    pub probs: Vec<f32>,
    /// The recogniser's text before normalisation.
    pub raw: String,
    /// Positions in `text` before which the recogniser read a mark, not a character: a dash, a
    /// dot or an emblem between character groups.
    pub marks: Vec<usize>,
    /// The least sure character's probability: a plate is only as right as its weakest character.
    pub confidence: f32,
    /// How plate-like the line is; higher is better, used to choose among lines.
    pub likeness: f32,
    /// Whether a configured format matched.
    pub formatted: bool,
    /// Whether small marks were cut off the line's ends before it was read
    /// (`anpr::glyphs`): what a longer read of the line holds beyond this one was left
    /// out on purpose, not shaved off by a tight box.
    pub trimmed: bool,
}

impl PlateText {
    /// Whether the text reads as a serial: letters and digits both, or a configured format's
    /// shape. Model names, state names, slogans and phone numbers are of one kind; so are vanity
    /// plates, which only the place they are read in can tell from the rest.
    pub fn is_serial(&self) -> bool {
        self.formatted
            || (self.text.bytes().any(|c| c.is_ascii_digit()) && self.text.bytes().any(|c| c.is_ascii_uppercase()))
    }
}

#[cfg(test)]
impl PlateText {
    /// A test read of `text`, its characters as sure as `probs` say, as plate-like as its weakest.
    pub(crate) fn sample(text: &str, probs: &[f32]) -> Self {
        let confidence = probs.iter().copied().fold(1.0, f32::min);
        PlateText {
            text: text.into(),
            probs: probs.to_vec(),
            raw: text.into(),
            marks: Vec::new(),
            confidence,
            likeness: confidence,
            formatted: false,
            trimmed: false,
        }
    }
}

/// Judge a recognised line (`aspect` is its width over height) as a plate candidate; `None` when
/// it cannot be one. Text of one kind is judged too, ranked below serials and marked by
/// [`PlateText::is_serial`], for the reader to take only as a vehicle's vanity plate.
/// A format re-ranks and fixes confusions but never rejects a line that passes without it, so a
/// vanity plate or an older series is still read under a region's preset.
pub fn judge(chars: &[Char], aspect: f32, formats: &Formats) -> Option<PlateText> {
    let read = chars;
    let raw: String = chars.iter().map(|c| c.ch).collect();
    // Plates are upper case: a lone lower-case letter among capitals is an emblem or a smudge.
    let lower = chars.iter().filter(|c| c.ch.is_ascii_lowercase()).count();
    let upper = chars.iter().filter(|c| c.ch.is_ascii_uppercase()).count();
    let drop_lower = lower > 0 && upper >= 3 * lower;
    let kept: Vec<Char> = chars
        .iter()
        .filter(|c| c.ch.is_ascii_alphanumeric() && !(drop_lower && c.ch.is_ascii_lowercase()))
        .map(|c| Char { ch: c.ch.to_ascii_uppercase(), ..*c })
        .collect();
    if !(4..=9).contains(&kept.len()) {
        return None;
    }
    let weakest = |c: &[Char]| c.iter().map(|c| c.prob).fold(1.0, f32::min);
    // A format chooses between readings the recogniser found plausible; bending a character into
    // a twin it gave little weight would turn a plate of another series into a worse read, so
    // such a fit is not taken and the line is judged as read.
    let fitted =
        if formats.is_empty() { None } else { formats.fit(&kept) }.filter(|f| weakest(f) >= FIT_KEEP * weakest(&kept));
    let formatted = fitted.is_some();
    let chars = fitted.unwrap_or(kept);
    // Nine characters are a plate with a stray glyph only a format's drops can take off.
    if chars.len() > LONGEST_PLATE {
        return None;
    }
    let text: String = chars.iter().map(|c| c.ch).collect();
    if is_clock_or_date(&raw) {
        return None;
    }
    let probs: Vec<f32> = chars.iter().map(|c| c.prob).collect();
    // A mark is punctuation the recogniser preferred well over any character there.
    let is_mark = |r: &Char| {
        !(r.ch.is_alphanumeric() || r.ch.is_whitespace())
            && r.alts.iter().filter(|a| a.0.is_alphanumeric()).all(|a| 2.0 * a.1 < r.prob)
    };
    let mut marks: Vec<usize> = read
        .iter()
        .filter(|r| is_mark(r))
        .map(|r| chars.iter().filter(|c| c.step < r.step).count())
        .filter(|&i| i > 0 && i < chars.len())
        .collect();
    marks.dedup();
    let confidence = probs.iter().copied().fold(1.0, f32::min);
    let mean = probs.iter().sum::<f32>() / probs.len() as f32;

    let visible = raw.chars().filter(|c| !c.is_whitespace()).count().max(1) as f32;
    // Slogans and dealer frames are words: lower case, punctuation, non-Latin script.
    let junk = raw.chars().filter(|c| !(c.is_ascii_uppercase() || c.is_ascii_digit() || " -.·:".contains(*c))).count();
    let digits = text.chars().filter(char::is_ascii_digit).count();
    let mut likeness = mean - junk as f32 / visible;
    // Four characters is a plate's shortest length (old series, vanity): a shaved read looks so.
    if text.len() == 4 {
        likeness -= 0.15;
    }
    if digits == 0 || digits == text.len() {
        likeness -= 0.1;
    }
    if !(1.5..=12.0).contains(&aspect) {
        likeness -= 0.3;
    }
    if formatted {
        likeness += 0.3;
    } else if !formats.is_empty() {
        likeness -= 0.2;
    }
    Some(PlateText { text, probs, raw, marks, confidence, likeness, formatted, trimmed: false })
}

/// A character read under this probability may be a mark misread (see [`excise_marks`]).
const UNSURE_MARK: f32 = 0.8;

/// Where one read of a line (a crop, a frame) read a mark between two characters (see
/// [`PlateText::marks`]) and another read an unsure character between the same neighbours,
/// that character is the mark: a separator or emblem between a plate's character groups (a dot, a state's outline, a
/// heart) that the recogniser, which only knows characters, took for a letter in one crop and
/// for punctuation in the other. The character is taken out when the rest of its read matches
/// the marked read in all but a third of its characters, so a read of another line is no
/// evidence. Sure characters stay: a plate's own glyph is read sure somewhere.
///
/// A read sure in every character that holds no glyph at all between those neighbours is the
/// same evidence (the mark was painted over, or the recogniser passed it by) when the rest of
/// the unsure read is exactly that read. Only for a character unlike both its neighbours: a
/// CTC recogniser can read two glyphs alike side by side as one (`11` as `1`, and `B8` as `B`
/// in a sure read of `KL3·B8K`) and be sure of the rest.
pub fn excise_marks(reads: &mut [PlateText]) {
    let marked: Vec<(Vec<u8>, usize)> =
        reads.iter().flat_map(|r| r.marks.iter().map(|&i| (r.text.as_bytes().to_vec(), i))).collect();
    let sure: Vec<Vec<u8>> =
        reads.iter().filter(|r| r.confidence >= SURE).map(|r| r.text.as_bytes().to_vec()).collect();
    let alike = |a: u8, b: u8| a == b || twins(char::from(a)).any(|(c, _)| c == char::from(b));
    for read in reads.iter_mut() {
        let t = read.text.as_bytes();
        let is_mark = |i: usize| {
            let without: Vec<u8> = t[..i].iter().chain(&t[i + 1..]).copied().collect();
            let lone = !alike(t[i], t[i - 1]) && !alike(t[i], t[i + 1]);
            marked.iter().any(|(m, at)| {
                *at == i
                    && m.len() == without.len()
                    && 3 * m.iter().zip(&without).filter(|(a, b)| a != b).count() <= m.len()
            }) || (lone && sure.contains(&without))
        };
        if let Some(i) = (1..t.len().saturating_sub(1)).find(|&i| read.probs[i] < UNSURE_MARK && is_mark(i)) {
            read.text.remove(i);
            read.probs.remove(i);
            read.marks.iter_mut().filter(|m| **m > i).for_each(|m| *m -= 1);
            read.marks.push(i);
            read.marks.sort_unstable();
            read.marks.dedup();
            read.confidence = read.probs.iter().copied().fold(1.0, f32::min);
        }
    }
}

/// Whether a line is a clock or a date, as cameras and dashcams burn into their pictures: a time
/// (one or two digits, a colon, two digits: 08:05, 12:34:56), or digits in three groups split by
/// `-`, `/` or `.` (2014-05-08, 08/05/14). A colon alone is not enough: German plates carry their
/// inspection seals between the district and the letters, which recognisers read as a colon.
/// A line of digits and colons alone is a clock too, whatever its groups: a clock's small colon
/// is often read as a digit (07:51816 for 07:51:13), while a plate read with a colon has letters
/// beside it.
fn is_clock_or_date(raw: &str) -> bool {
    let parts: Vec<&str> = raw.split([':', '\u{ff1a}']).collect();
    let time = parts.windows(2).any(|w| {
        let before = w[0].trim_end().chars().rev().take_while(char::is_ascii_digit).count();
        let after = w[1].trim_start().chars().take_while(char::is_ascii_digit).count();
        (1..=2).contains(&before) && after == 2
    });
    let digits_and_colons = parts.len() > 1 && parts.iter().all(|p| p.trim().chars().all(|c| c.is_ascii_digit()));
    if time || digits_and_colons {
        return true;
    }
    let compact: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    let groups: Vec<&str> = compact.split(['-', '/', '.']).collect();
    // One digit read as its look-alike letter (see [`CONFUSIONS`]) still makes a date. Two do
    // not: a plate of three groups can hold letters.
    let alike = |c: char| CONFUSIONS.iter().any(|&(letter, _)| letter == c.to_ascii_uppercase());
    groups.len() == 3
        && compact.chars().filter(|&c| alike(c)).count() <= 1
        && groups.iter().all(|g| (1..=4).contains(&g.len()) && g.chars().all(|c| c.is_ascii_digit() || alike(c)))
}

/// Levenshtein distance between two short strings.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (prev + usize::from(ca != cb)).min(row[j] + 1).min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(text: &str, probs: &[f32]) -> Vec<Char> {
        text.chars()
            .zip(probs)
            .enumerate()
            .map(|(step, (ch, &prob))| Char { ch, prob, step, blank: 0.01, alts: [(' ', 0.0); 2] })
            .collect()
    }

    #[test]
    fn normalising_keeps_letters_and_digits_in_upper_case() {
        assert_eq!(normalise("ab-12 3·Cd"), "AB123CD");
    }

    #[test]
    fn a_format_fixes_only_the_positions_it_constrains() {
        let f = Formats::parse(&["br".into()]).unwrap();
        let text = |c: Vec<Char>| c.iter().map(|c| c.ch).collect::<String>();
        // O in a digit position becomes 0 (its runner-up); the letters stay.
        let mut read = chars("ABCO123", &[0.9; 7]);
        read[3].alts = [('0', 0.05), ('Q', 0.01)];
        assert_eq!(text(f.fit(&read).unwrap()), "ABC0123");
        // Mercosul: a digit last; the S there, nearly a 5, becomes 5.
        let mut read = chars("ABC1B2S", &[0.9; 7]);
        (read[6].prob, read[6].alts) = (0.5, [('5', 0.45), ('B', 0.01)]);
        assert_eq!(text(f.fit(&read).unwrap()), "ABC1B25");
        assert!(f.fit(&chars("ABCDEFG", &[0.9; 7])).is_none(), "no four digits to be had");
        // Two sure characters would both have to change: not believed.
        assert!(f.fit(&chars("ABCOI2S", &[0.99; 7])).is_none());
    }

    #[test]
    fn a_runner_up_twin_is_cheaper_than_a_sure_one() {
        let f = Formats::parse(&["hr".into(), "cz".into()]).unwrap();
        let mut read = chars("RK896A0", &[0.99; 7]);
        // The last 0 was nearly an O; the A was never a 4.
        read[6].alts = [('O', 0.2), ('Q', 0.01)];
        let fixed: String = f.fit(&read).unwrap().iter().map(|c| c.ch).collect();
        assert_eq!(fixed, "RK896AO");
    }

    #[test]
    fn a_format_choosing_between_like_glyphs_keeps_their_joint_probability() {
        let f = Formats::parse(&["hr".into()]).unwrap();
        let mut read = chars("PP587A0", &[0.99; 7]);
        read[6].prob = 0.7;
        read[6].alts = [('O', 0.29), ('D', 0.01)];
        let fixed = f.fit(&read).unwrap();
        assert_eq!(fixed.iter().map(|c| c.ch).collect::<String>(), "PP587AO");
        assert!((fixed[6].prob - 0.99).abs() < 1e-5, "{}", fixed[6].prob);
        // D is another shape: taking it keeps only D's own share.
        let f = Formats::parse(&["[A-Z]{2}[0-9]{3}[A-Z]D".into()]).unwrap();
        assert!((f.fit(&read).unwrap()[6].prob - 0.01).abs() < 1e-5);
    }

    #[test]
    fn confidence_is_the_weakest_character() {
        let mut read = chars("RK755AJ", &[0.99; 7]);
        read[2].prob = 0.3;
        let text = judge(&read, 4.0, &Formats::default()).unwrap();
        assert!((text.confidence - 0.3).abs() < 1e-6);
    }

    #[test]
    fn nine_characters_are_a_plate_only_once_a_format_drops_one() {
        // A German plate with a stray glyph (a seal read as `O`): longer than any plate.
        let mut read = chars("MSAB1O234", &[0.97; 9]);
        assert!(judge(&read, 5.0, &Formats::default()).is_none());
        read[5].prob = 0.5;
        read[5].blank = 0.4;
        let text = judge(&read, 5.0, &Formats::parse(&["de".into()]).unwrap()).unwrap();
        assert_eq!(text.text, "MSAB1234");
    }

    #[test]
    fn an_unsure_extra_character_is_dropped_to_fit() {
        let f = Formats::parse(&["cz".into()]).unwrap();
        let mut read = chars("4B480262", &[0.97; 8]);
        read[3].prob = 0.5;
        read[3].blank = 0.4;
        let fixed: String = f.fit(&read).unwrap().iter().map(|c| c.ch).collect();
        assert_eq!(fixed, "4B40262");
    }

    #[test]
    fn a_sure_character_is_never_dropped_to_fit() {
        // A Californian serial under the European preset: its sure leading digit stays, even
        // where the blank was its runner-up and dropping it would fit a six-character series.
        let eu = Formats::parse(&["eu".into()]).unwrap();
        let mut read = chars("6LSU216", &[0.99; 7]);
        read[0].blank = 0.05;
        let fit: Option<String> = eu.fit(&read).map(|v| v.iter().map(|c| c.ch).collect());
        assert_ne!(fit.as_deref(), Some("LSU216"));
        read[0].prob = 0.6;
        read[0].blank = 0.35;
        let fit: Option<String> = eu.fit(&read).map(|v| v.iter().map(|c| c.ch).collect());
        assert_eq!(fit.as_deref(), Some("LSU216"), "an unsure one still may be");
    }

    #[test]
    fn presets_and_bad_patterns() {
        assert!(Formats::parse(&["eu".into(), "[A-Z]{3}[0-9]{3}".into()]).is_ok());
        // A Californian serial read with O for 0: the us preset puts the digit back.
        let us = Formats::parse(&["us".into()]).unwrap();
        let mut read = chars("7ABC1O3", &[0.9; 7]);
        read[5].alts = [('0', 0.05), ('D', 0.01)];
        let fixed: String = us.fit(&read).unwrap().iter().map(|c| c.ch).collect();
        assert_eq!(fixed, "7ABC103");
        // A Polish diplomatic plate keeps its digit 0 instead of being bent into a civilian series.
        let pl = Formats::parse(&["pl".into()]).unwrap();
        let kept: String = pl.fit(&chars("W053011", &[0.9; 7])).unwrap().iter().map(|c| c.ch).collect();
        assert_eq!(kept, "W053011");
        let err = Formats::parse(&["[A-Z".into()]).unwrap_err();
        assert!(err.contains("[A-Z"), "{err}");
    }

    #[test]
    fn words_score_below_plates() {
        let f = Formats::default();
        let plate = judge(&chars("RK 755-AJ", &[0.9; 9]), 4.0, &f).unwrap();
        assert_eq!(plate.text, "RK755AJ");
        for line in ["2014-05-08", "08:03:31"] {
            assert!(judge(&chars(line, &[0.9; 10]), 4.0, &f).is_none(), "{line}");
        }
        // Words and phone numbers are judged, but not as serials, and rank below one.
        for line in ["Autohaus", "TOYOTA", "376-8750", "8014:04-2"] {
            let word = judge(&chars(line, &[0.9; 10]), 4.0, &f).unwrap();
            assert!(!word.is_serial() && word.likeness < plate.likeness, "{line}");
        }
        assert!(plate.is_serial());
        // Under a format, a line that fits it may be of one kind.
        let digits = Formats::parse(&["[0-9]{7}".into()]).unwrap();
        assert_eq!(judge(&chars("1365847", &[0.9; 7]), 4.0, &digits).unwrap().text, "1365847");
        assert!(judge(&chars("AB", &[0.9; 2]), 3.0, &f).is_none());
    }

    #[test]
    fn clocks_and_dates_are_not_plates_but_seals_read_as_a_colon_are() {
        // `2014-B4-30`: a date with one digit read as its look-alike letter.
        for clock in
            ["12:34:56", "2014-05-08 08:05", "08/05/14", "2014.05.08", "9:30", "07:51816", "123:4567", "2014-B4-30"]
        {
            assert!(is_clock_or_date(clock), "{clock}");
        }
        // German plates: district, seals (read as a colon), letters, digits. Dutch plates come in
        // three groups, letters in one of them.
        for plate in ["BSE:55-79", "M:AB 123", "3B2:9485", "RK-755AJ", "12-BB-34", "99-XG-12", "6-SZL-20"] {
            assert!(!is_clock_or_date(plate), "{plate}");
        }
    }

    #[test]
    fn a_glyph_another_read_saw_as_a_mark_between_the_same_neighbours_is_that_mark() {
        let f = Formats::default();
        let mut colon = chars("91A:42A", &[0.9, 0.9, 0.9, 0.44, 0.9, 0.42, 0.9]);
        colon[3].alts = [('-', 0.04), ('·', 0.03)];
        let marked = judge(&colon, 3.0, &f).unwrap();
        assert_eq!((marked.text.as_str(), marked.marks.as_slice()), ("91A42A", &[3][..]));
        // A dash the recogniser nearly read as the letter there is no mark.
        let mut dash = chars("D-5X9P", &[0.97, 0.28, 0.94, 0.9, 0.93, 0.98]);
        dash[1].alts = [('H', 0.27), ('.', 0.13)];
        assert!(judge(&dash, 3.0, &f).unwrap().marks.is_empty());

        let letter = |p: f32| judge(&chars("91AN4ZA", &[0.9, 0.9, 0.9, p, 0.9, 0.9, 0.9]), 2.0, &f).unwrap();
        let other_line = judge(&chars("XY7-42A", &[0.9; 7]), 3.0, &f).unwrap();
        let mut reads = vec![letter(0.52), marked.clone(), letter(0.95), other_line.clone()];
        excise_marks(&mut reads);
        let texts: Vec<&str> = reads.iter().map(|r| r.text.as_str()).collect();
        // The unsure N goes (the Z/2 the marked read differs in is left to the vote); a sure N
        // stays; a mark in a line that reads otherwise is no evidence.
        assert_eq!(texts, ["91A4ZA", "91A42A", "91AN4ZA", "XY742A"]);
        assert_eq!((reads[0].probs.len(), reads[0].marks.as_slice()), (6, &[3][..]));
        let mut alone = vec![letter(0.52), other_line];
        excise_marks(&mut alone);
        assert_eq!(alone[0].text, "91AN4ZA");
    }

    #[test]
    fn a_glyph_a_sure_read_of_the_same_line_does_not_hold_is_a_mark() {
        // Arizona's `91A·4ZA`: one crop passes the emblem by, sure of the rest; the others read
        // it as an unsure N (seen on a live camera, where the vote then went to `91AN4ZA`).
        let read = |text: &str, p: &[f32]| PlateText::sample(text, p);
        let mut reads = vec![
            read("91A4ZA", &[0.95, 0.99, 0.99, 0.99, 0.99, 0.99]),
            read("91AN4ZA", &[0.99, 0.99, 0.99, 0.37, 0.99, 0.99, 0.99]),
            read("91AN4ZA", &[0.99, 0.99, 0.99, 0.61, 0.99, 0.99, 0.99]),
        ];
        excise_marks(&mut reads);
        assert!(reads.iter().all(|r| r.text == "91A4ZA"), "{reads:?}");
        // Not evidence: a short read that is not sure in every character, a doubled glyph or a
        // glyph beside its look-alike read once, a short read that differs elsewhere too.
        let mut kept = vec![
            read("91A4ZA", &[0.85; 6]),
            read("91AN4ZA", &[0.99, 0.99, 0.99, 0.6, 0.99, 0.99, 0.99]),
            read("7BC1234", &[0.99; 7]),
            read("7BC11234", &[0.99, 0.99, 0.99, 0.99, 0.5, 0.99, 0.99, 0.99]),
            read("KL3BK", &[0.99; 5]),
            read("KL3B8K", &[0.99, 0.99, 0.99, 0.99, 0.5, 0.99]),
            read("5KLM20", &[0.99; 6]),
            read("5KLMX21", &[0.99, 0.99, 0.99, 0.99, 0.5, 0.99, 0.99]),
        ];
        excise_marks(&mut kept);
        let texts: Vec<&str> = kept.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(texts, ["91A4ZA", "91AN4ZA", "7BC1234", "7BC11234", "KL3BK", "KL3B8K", "5KLM20", "5KLMX21"]);
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("RK755AJ", "RK755AJ"), 0);
        assert_eq!(edit_distance("RK755AJ", "RK755A"), 1);
        assert_eq!(edit_distance("RK755AJ", "RK7S5AJ"), 1);
        assert_eq!(edit_distance("", "ABC"), 3);
    }
}
