//! ANPR: find plates (text detection inside a vehicle box or the whole frame), straighten them,
//! read them (CTC recognition), and choose the plate among the lines ([`plate`]). Reads of one
//! vehicle track are combined by [`consensus`].
//!
//! Both models run through the shared inference service, so every camera's plate reads batch
//! together.

pub mod consensus;
pub mod ctc;
pub mod glyphs;
pub mod looks;
pub mod queue;
pub mod still;
pub mod textdet;

use std::sync::Arc;

use image::{GenericImageView, RgbImage};

use crate::config::{InferenceConfig, ModelsConfig};
use crate::inference::manifest::{Manifest, Normalise};
use crate::inference::{Batcher, InferenceError, Runtime, Workload};
use crate::metrics::Metrics;
use crate::plate::{self, Formats, PlateText, SURE};
use ctc::Alphabet;
use textdet::{DbParams, Quad};

/// Recogniser input height and the narrowest input width (PP-OCR's 48 × 320).
const REC_HEIGHT: u32 = 48;
const REC_MIN_WIDTH: u32 = 320;
/// A vehicle's box is searched at this width: a plate is about a fifth to a third of a vehicle's
/// width, so its characters come out 20–40 px high whatever the vehicle's distance, the size
/// the text detector finds best, and the cost stays fixed.
const VEHICLE_DET_WIDTH: u32 = 512;
/// A still's vehicle whose plate read unsure is searched again at this width (see
/// [`PlateReader::read_vehicle_finer`]): its characters come out a quarter taller.
const FINER_VEHICLE_DET_WIDTH: u32 = 640;
/// A scene is searched with its longer side at most this.
const SCENE_DET_MAX: u32 = 960;
/// Text lines read per region, largest first; a vehicle rarely carries more that matter.
const MAX_LINES: usize = 12;
/// Lines narrower than this times their height are not read (see [`PlateReader::recognise`]).
const MIN_LINE_ASPECT: f32 = 1.5;
/// Vehicle boxes that overlap this much (intersection over union) are one vehicle under two
/// labels: the detector suppresses overlaps per class, so a van is often boxed as both a car and
/// a truck, and two vehicles in one view are never framed that alike.
pub const SAME_VEHICLE: f32 = 0.7;
/// The most plate-like lines of a region that are read again, grown.
const REREAD_LINES: usize = 2;
/// The narrowest plate worth reading, in pixels: narrower, its characters are under about ten
/// pixels high, too few for a recogniser to tell them apart (OpenALPR's region settings refuse
/// plates under 65–70 px wide for the same reason).
const MIN_PLATE_WIDTH: f32 = 64.0;
/// The largest share of a whole vehicle's box width its plate takes: a car's plate is about a
/// sixth (US) to a third (EU) of its width, a motorcycle's about a quarter; half leaves room for
/// loose boxes and narrow vehicles.
const MAX_PLATE_SHARE: f32 = 0.5;
/// Pixels from the picture's border within which a box is taken to be cut off.
const CUT: f32 = 2.0;

/// Whether a vehicle boxed at `bbox` in a `(width, height)` picture can show a plate wide enough
/// to read. A box cut by the picture's border may be only the part of the vehicle that carries
/// the plate, so it needs only to be as wide as the plate. A far vehicle is left until it comes
/// closer: reading it earlier costs a text search and finds nothing it could read.
pub fn legible_vehicle(bbox: [f32; 4], (width, height): (u32, u32)) -> bool {
    let share = if cut_off(bbox, (width, height)) { 1.0 } else { MAX_PLATE_SHARE };
    (bbox[2] - bbox[0]) * share >= MIN_PLATE_WIDTH
}

/// Whether a box reaches the picture's border, so it may show only part of its vehicle.
fn cut_off(bbox: [f32; 4], (width, height): (u32, u32)) -> bool {
    let (w, h) = (width as f32, height as f32);
    bbox[0] <= CUT || bbox[1] <= CUT || bbox[2] >= w - CUT || bbox[3] >= h - CUT
}

/// What an image (or region) handed to [`PlateReader::read`] shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Search {
    /// A vehicle's box: the plate's size is about known from the box's.
    Vehicle,
    /// A whole scene: plates anywhere, at any size (a dedicated ANPR camera's view). Where it
    /// reads no sure plate, it is looked at again closer (see [`looks::closer_looks`]).
    Scene,
    /// A whole frame searched for the plates of vehicles too close, or too odd, to be boxed (the
    /// vehicle mode's fallback): those plates are large, and small ones belong to vehicles whose
    /// own boxes are searched, so it is not looked at closer. Closer looks there read pieces of
    /// a plate as sure plates (`906AJ` of `RK906AJ`) while a car drives in.
    Unboxed,
}

/// One plate read in an image.
#[derive(Debug, Clone, PartialEq)]
pub struct PlateRead {
    pub text: PlateText,
    /// The plate's outline, in image pixels.
    pub quad: Quad,
}

impl PlateRead {
    /// The axis-aligned plate box `[x1, y1, x2, y2]`.
    pub fn bbox(&self) -> [f32; 4] {
        self.quad.bbox()
    }
}

/// One look at a region: its plate-like reads, the lines found (with those
/// [`textdet::joined`] makes), and each joined line with its pieces.
type Look = (Vec<PlateRead>, Vec<Quad>, Vec<(Quad, Vec<Quad>)>);

/// The text detector and recogniser; shared by every camera.
pub struct PlateReader {
    det: Batcher,
    det_norm: Normalise,
    rec: Batcher,
    alphabet: Alphabet,
    classes: usize,
}

impl PlateReader {
    /// Load the `text-detect` and `text-recognise` models named in the manifest.
    pub fn load(
        models: &ModelsConfig,
        runtime: &Runtime,
        inference: &InferenceConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, InferenceError> {
        let manifest = Manifest::load(models)?;
        let find = |task: &str| {
            manifest.models.iter().find(|m| m.task == task).ok_or_else(|| InferenceError::Model {
                path: manifest.dir.join("manifest.toml").display().to_string(),
                reason: format!("no `{task}` model"),
            })
        };
        let (det_entry, rec_entry) = (find("text-detect")?, find("text-recognise")?);
        let det_norm = det_entry.normalise.ok_or_else(|| InferenceError::Model {
            path: manifest.dir.join("manifest.toml").display().to_string(),
            reason: format!("`{}` needs `normalise`: the mean and deviation it was trained with", det_entry.name),
        })?;
        let det = runtime.session(&manifest.path(&det_entry.file), Workload::Regions)?;
        let rec_path = manifest.path(&rec_entry.file);
        let rec = runtime.session(&rec_path, Workload::Regions)?;
        let err = |reason: String| InferenceError::Model { path: rec_path.display().to_string(), reason };
        // PP-OCR exports carry their dictionary in the model metadata.
        let dictionary = rec
            .metadata()
            .ok()
            .and_then(|m| m.custom("character"))
            .ok_or_else(|| err("no `character` dictionary in the model metadata".into()))?;
        let alphabet = Alphabet::from_lines(&dictionary);
        let classes = match rec.outputs().first().map(|o| o.dtype()) {
            Some(ort::value::ValueType::Tensor { shape, .. }) => shape.last().copied().unwrap_or(-1),
            _ => -1,
        };
        if classes != alphabet.classes() as i64 {
            return Err(err(format!("outputs {classes} classes but its dictionary needs {}", alphabet.classes())));
        }
        Ok(Self {
            det: Batcher::spawn(&det_entry.name, vec![det], inference, metrics.clone()),
            det_norm,
            rec: Batcher::spawn(&rec_entry.name, vec![rec], inference, metrics),
            alphabet,
            classes: classes as usize,
        })
    }

    /// Plate candidates in `region` (`[x1, y1, x2, y2]`, default the whole image), which shows
    /// what `search` says, most plate-like first.
    pub fn read(
        &self,
        image: &RgbImage,
        region: Option<[u32; 4]>,
        search: Search,
        formats: &Formats,
    ) -> Result<Vec<PlateRead>, InferenceError> {
        let region = clip(region.unwrap_or([0, 0, image.width(), image.height()]), image.dimensions());
        match search {
            Search::Vehicle => self.read_vehicle(image, region, VEHICLE_DET_WIDTH, formats),
            Search::Scene | Search::Unboxed => self.read_scene(image, region, search, formats),
        }
    }

    /// A vehicle's plate candidates as [`Self::read`] finds them, searched at
    /// [`FINER_VEHICLE_DET_WIDTH`]: a second look for a still, whose one frame is all there is
    /// to read, where a track would read its plate again on its next frames.
    pub fn read_vehicle_finer(
        &self,
        image: &RgbImage,
        region: [u32; 4],
        formats: &Formats,
    ) -> Result<Vec<PlateRead>, InferenceError> {
        self.read_vehicle(image, clip(region, image.dimensions()), FINER_VEHICLE_DET_WIDTH, formats)
    }

    /// A vehicle's plate: its serials, or its vanity plate, with its box searched at most `side`
    /// pixels wide.
    fn read_vehicle(
        &self,
        image: &RgbImage,
        region: [u32; 4],
        side: u32,
        formats: &Formats,
    ) -> Result<Vec<PlateRead>, InferenceError> {
        let [x1, y1, x2, y2] = region;
        let size = vehicle_det_size(x2.saturating_sub(x1), y2.saturating_sub(y1), side);
        let (mut reads, _, _) = self.look(image, region, size, Search::Vehicle, formats)?;
        keep_tallest_serials(&mut reads);
        let cut = cut_off([x1 as f32, y1 as f32, x2 as f32, y2 as f32], image.dimensions());
        let least = if cut { 0.0 } else { PLATE_LINE_SHARE * x2.saturating_sub(x1) as f32 };
        admit_vanity(&mut reads, (y1, y2), least);
        Ok(reads)
    }

    /// A scene's serials, searched with its longer side at most [`SCENE_DET_MAX`]; where that
    /// reads no sure plate and `search` is [`Search::Scene`], looked at again closer around its
    /// small plate-shaped lines (see [`looks::closer_looks`]), and each closer look pooled with
    /// what the scene read there.
    fn read_scene(
        &self,
        image: &RgbImage,
        region: [u32; 4],
        search: Search,
        formats: &Formats,
    ) -> Result<Vec<PlateRead>, InferenceError> {
        let width = region[2].saturating_sub(region[0]);
        let size = textdet::input_size(width, region[3].saturating_sub(region[1]), 0, SCENE_DET_MAX);
        let (mut reads, lines) = self.look_at_scene(image, region, size, formats)?;
        if search != Search::Scene || reads.iter().any(|r| r.text.confidence >= SURE) {
            return Ok(reads);
        }
        for (look, size) in looks::closer_looks(&lines, size.0 as f32 / width.max(1) as f32, image.dimensions()) {
            let (again, _) = self.look_at_scene(image, look, size, formats)?;
            reads = looks::pool_looks(reads, again);
        }
        Ok(reads)
    }

    /// A scene's serial reads in `region`, searched at `size`, and every line found there. A
    /// scene has signs and shop fronts, and no vehicle to place a word on.
    fn look_at_scene(
        &self,
        image: &RgbImage,
        region: [u32; 4],
        size: (u32, u32),
        formats: &Formats,
    ) -> Result<(Vec<PlateRead>, Vec<Quad>), InferenceError> {
        let (mut reads, lines, joined) = self.look(image, region, size, Search::Scene, formats)?;
        let unread: Vec<Quad> = lines.iter().filter(|q| reads.iter().all(|r| r.quad != **q)).copied().collect();
        drop_continued_text(&mut reads, &unread, &joined);
        reads.retain(|r| r.text.is_serial());
        Ok((reads, lines))
    }

    /// The text lines in `region`, searched at `size`, and their plate-like reads (see [`Look`]).
    fn look(
        &self,
        image: &RgbImage,
        region: [u32; 4],
        size: (u32, u32),
        search: Search,
        formats: &Formats,
    ) -> Result<Look, InferenceError> {
        let [x1, y1, x2, y2] = region;
        if x2 <= x1 + 8 || y2 <= y1 + 8 {
            return Ok(Default::default());
        }
        let quads = self.find_lines(image, region, size)?;
        let offset = (x1 as f32, y1 as f32);
        let mut quads: Vec<Quad> = quads.into_iter().map(|q| q.map((1.0, 1.0), offset)).collect();
        let joined = textdet::joined(&quads);
        quads.extend(joined.iter().map(|(line, _)| *line));
        let mut reads = self.read_lines(image, &quads, search, formats)?;
        // A joined line that reads as a serial holding each piece's text is the plate, and its
        // pieces are parts of it; one that reads otherwise (or is longer than a plate, which
        // `judge` refuses) joined text that was not one line: a plate and the one behind it.
        for (line, pieces) in &joined {
            let holds_pieces = |w: &PlateRead| {
                w.text.is_serial()
                    && reads.iter().filter(|r| pieces.contains(&r.quad)).all(|p| w.text.text.contains(&p.text.text))
            };
            match reads.iter().find(|r| r.quad == *line).map(holds_pieces) {
                Some(true) => reads.retain(|r| !pieces.contains(&r.quad)),
                Some(false) => reads.retain(|r| r.quad != *line),
                None => {}
            }
        }
        Ok((reads, quads, joined))
    }

    /// Text lines in `region` of an image, searched at `(w, h)`, as quads in the region's pixels,
    /// the largest first.
    fn find_lines(&self, image: &RgbImage, region: [u32; 4], (w, h): (u32, u32)) -> Result<Vec<Quad>, InferenceError> {
        let out =
            self.det.infer(&[3, h as usize, w as usize], textdet::tensor(image, region, (w, h), w, self.det_norm))?;
        let (mh, mw) = match out.shape.as_slice() {
            [1, mh, mw] => (*mh, *mw),
            other => return Err(InferenceError::Run(format!("text detector output {other:?}"))),
        };
        let scale = ((region[2] - region[0]) as f32 / mw as f32, (region[3] - region[1]) as f32 / mh as f32);
        let mut quads: Vec<Quad> = textdet::regions(&out.data, mw, mh, &DbParams::default())
            .into_iter()
            .map(|(q, _)| q.map(scale, (0.0, 0.0)))
            .collect();
        quads.sort_by(|a, b| (b.size().0 * b.size().1).total_cmp(&(a.size().0 * a.size().1)));
        quads.truncate(MAX_LINES);
        Ok(quads)
    }

    /// Recognise each quad and judge it as a plate; the most plate-like first. Every quad is
    /// read as found; the most plate-like few ([`reread`]) are read again grown (see
    /// [`VARIANTS`]), and each one's reads are pooled by [`pool`].
    fn read_lines(
        &self,
        image: &RgbImage,
        quads: &[Quad],
        search: Search,
        formats: &Formats,
    ) -> Result<Vec<PlateRead>, InferenceError> {
        let mut texts: Vec<Vec<PlateText>> = vec![Vec::new(); quads.len()];
        let first: Vec<(usize, Quad)> = quads.iter().copied().enumerate().collect();
        self.recognise(image, &first, formats, &mut texts)?;
        let again: Vec<(usize, Quad)> = reread(&texts, search)
            .into_iter()
            .flat_map(|i| VARIANTS.iter().map(move |&(along, across)| (i, quads[i].grow(along, across))))
            .collect();
        self.recognise(image, &again, formats, &mut texts)?;
        let mut reads: Vec<PlateRead> =
            quads.iter().zip(texts).filter_map(|(quad, t)| Some(PlateRead { text: pool(t)?, quad: *quad })).collect();
        reads.sort_by(|a, b| b.text.likeness.total_cmp(&a.text.likeness));
        Ok(reads)
    }

    /// Read each `(line, quad)` and add its judged text, if plate-like, to `texts[line]`.
    fn recognise(
        &self,
        image: &RgbImage,
        quads: &[(usize, Quad)],
        formats: &Formats,
        texts: &mut [Vec<PlateText>],
    ) -> Result<(), InferenceError> {
        let mut items = Vec::new();
        let mut kept = Vec::new();
        for &(i, quad) in quads {
            // A plate is at least four characters, and characters are at most about as wide as
            // tall, so a line under [`MIN_LINE_ASPECT`] cannot be one: not worth reading.
            let (w, h) = quad.size();
            if w < MIN_LINE_ASPECT * h {
                continue;
            }
            let Some(line) = textdet::warp(image, &quad) else { continue };
            let (line, trimmed) = glyphs::trim_small_marks(mask_emblems(trim_bands(&line)));
            let (width, tensor) = rec_tensor(&line);
            items.push((vec![3, REC_HEIGHT as usize, width as usize], tensor));
            kept.push((i, line.width() as f32 / line.height().max(1) as f32, trimmed));
        }
        for ((i, aspect, trimmed), out) in kept.into_iter().zip(self.rec.infer_many(items)) {
            let chars = self.alphabet.decode(&out?.data, self.classes);
            texts[i].extend(plate::judge(&chars, aspect, formats).map(|t| PlateText { trimmed, ..t }));
        }
        Ok(())
    }
}

/// The lines to read again, given each line's first reads: the [`REREAD_LINES`] most plate-like,
/// serials first, and words in the places left. A vehicle carries one plate, and its words are
/// its plate only where none of its lines reads as a serial ([`admit_vanity`]), so in a
/// vehicle's box, once a line has read as a serial, words are not read again. A scene can hold
/// several vehicles, and a word there may be another plate that a grown re-read reads whole.
fn reread(texts: &[Vec<PlateText>], search: Search) -> Vec<usize> {
    let serial = |i: usize| texts[i].iter().any(PlateText::is_serial);
    let mut order: Vec<usize> = (0..texts.len()).filter(|&i| !texts[i].is_empty()).collect();
    order.sort_by(|&a, &b| serial(b).cmp(&serial(a)).then(texts[b][0].likeness.total_cmp(&texts[a][0].likeness)));
    let serials_only = search == Search::Vehicle && order.first().is_some_and(|&i| serial(i));
    order.into_iter().filter(|&i| serial(i) || !serials_only).take(REREAD_LINES).collect()
}

/// How the most plate-like lines are read again: grown along and across the text by these
/// fractions of its height. Text detectors draw tight boxes, and a box that shaves the first or
/// last character reads as a shorter, sure plate; a grown box keeps it. The detector can also
/// miss an end character whole where it touches the plate's dark frame, so one variant reaches
/// a further glyph (a character and its gap are about 0.7 of the text's height wide), with room
/// above and below; the other stays close and keeps the line's own height. Plates that print
/// words above and below their characters (US state names, slogans, dealer frames) read worse
/// with any of those words in the crop: whole US plates cropped to their annotated box read
/// 84 of 105, and 65 with a tenth of their height added above and below (EU and BR, whose
/// characters fill the plate, read the same either way).
const VARIANTS: [(f32, f32); 2] = [(0.8, 0.1), (0.15, 0.0)];

/// Serial text under this share of the tallest serial's height in one vehicle's box is not its
/// plate. A vehicle's plate characters are the largest serial text on that end of it; smaller
/// serials beside them are model badges (`E150`, `LX 1.4`), stickers, a photographer's
/// watermark, or the plate of a vehicle further off, which that vehicle's own search reads.
const SMALLER_SERIAL: f32 = 0.7;

/// Drop serial reads much shorter than the tallest serial read of the same vehicle (see
/// [`SMALLER_SERIAL`]); words are left to [`admit_vanity`].
fn keep_tallest_serials(reads: &mut Vec<PlateRead>) {
    let tallest = reads.iter().filter(|r| r.text.is_serial()).map(|r| r.quad.size().1).fold(0.0, f32::max);
    reads.retain(|r| !r.text.is_serial() || r.quad.size().1 >= SMALLER_SERIAL * tallest);
}

/// In a scene, drop the serials that continue a longer line of text: where a joined line did not
/// read as a plate, a serial piece beside a piece at least as wide that the recogniser read as no
/// plate candidate at all (longer than any plate, a phone number, a date) is part of that text:
/// a fleet number after a sticker's phone line, a code on a sign. A plate's characters stand
/// alone on the plate. Pieces read as words are left alone: a van's painted name can sit beside
/// its plate, and a plate split at its gap leaves shorter groups (`RK` of `RK 828-AG`). A
/// vehicle's own search has its box to tell its plate from such text instead.
fn drop_continued_text(reads: &mut Vec<PlateRead>, unread: &[Quad], joined: &[(Quad, Vec<Quad>)]) {
    for (line, pieces) in joined {
        if reads.iter().any(|r| r.quad == *line) {
            continue;
        }
        let longest_unread = pieces.iter().filter(|q| unread.contains(q)).map(|q| q.size().0).fold(0.0, f32::max);
        reads.retain(|r| !(pieces.contains(&r.quad) && r.text.is_serial() && r.quad.size().0 <= longest_unread));
    }
}

/// Vanity plates are this long: shorter words of one kind are mostly badges and years (`FORD`,
/// `JEEP`, `TAXI`, `2011`), longer ones fall outside the plate lengths `judge` keeps.
const VANITY_LEN: std::ops::RangeInclusive<usize> = 5..=8;
/// A plate is mounted on a bumper, in the lower part of a vehicle's outline: the top of its
/// centre's range, as a fraction of the box's height (loose boxes and the search margin lift it).
const VANITY_TOP: f32 = 0.4;

/// The least height of a plate's text line, as a share of its vehicle's search region's width.
/// Plate characters are at least about 60 mm tall (US 2.5–3 in, Mercosur 63 mm, EU 75–80 mm)
/// and a vehicle seen from the front or back is at most 2.55 m wide (the EU and US legal
/// limit), so the line is at least about a fortieth of the vehicle's width, a fiftieth of its
/// box with margins. Badge and model lettering is 15–30 mm tall, a hundredth to a sixtieth of a
/// car's width. Only words are held to it: a vehicle seen from the side is boxed wider than it
/// is, and its serial plate is still its plate ([`keep_tallest_serials`] judges serials
/// against each other instead).
const PLATE_LINE_SHARE: f32 = 0.02;

/// Keep a vehicle's serial reads, and a text of one kind (all letters or all digits) only as its
/// vanity plate: where none of its lines reads as a serial, the most plate-like one of
/// [`VANITY_LEN`] characters whose centre is low on the vehicle (`top` and `bottom` are the
/// searched region's rows) and whose line is at least `least` pixels tall (see
/// [`PLATE_LINE_SHARE`]; 0 where the region is cut by the picture's border, so its width is not
/// the vehicle's). A vehicle carries one plate, so where a serial is in view, words beside it
/// are its frame, badge or state name.
fn admit_vanity(reads: &mut Vec<PlateRead>, (top, bottom): (u32, u32), least: f32) {
    let mut vanity = !reads.iter().any(|r| r.text.is_serial());
    reads.retain(|r| {
        if r.text.is_serial() {
            return true;
        }
        let [_, y1, _, y2] = r.bbox();
        let low = (y1 + y2) / 2.0 >= top as f32 + VANITY_TOP * bottom.saturating_sub(top) as f32;
        let tall = r.quad.size().1 >= least;
        let admit = vanity && low && tall && VANITY_LEN.contains(&r.text.text.len());
        // Reads come most plate-like first; the first that fits is the vehicle's one plate.
        vanity &= !admit;
        admit
    });
}

/// The probability above which a character a grown box adds at the end of a line is believed.
const SURE_EDGE: f32 = 0.8;

/// One line's reads, pooled. A line that reads as a serial in any crop is a serial: its reads of
/// one kind are the same line with a glyph shaved off or misread (`781601` of `L781601`), and do
/// not vote. Then the text's extent: each read votes for its own text, and for
/// any longer read that contains it and whose extra characters at the ends are sure: a shorter
/// read inside it is the same line with a character shaved off by a tight box (not a read whose
/// crop had a small mark cut off on purpose: it votes for its own text only). The most voted
/// text (ties to the more plate-like) fixes the length. Then each character is voted among the
/// reads of that length that differ from it in at most a third of their characters, by their
/// summed probabilities: a glyph one crop misread is outvoted by the others. Each character is
/// as sure as its surest read.
fn pool(mut reads: Vec<PlateText>) -> Option<PlateText> {
    if reads.iter().any(PlateText::is_serial) {
        reads.retain(PlateText::is_serial);
    }
    plate::excise_marks(&mut reads);
    let supports = |long: &PlateText, short: &PlateText| {
        if long.text == short.text {
            return true;
        }
        // A read whose crop had a mark cut off does not vote for the longer reads that hold it.
        if short.trimmed {
            return false;
        }
        let Some(at) = long.text.find(&short.text) else { return false };
        let end = at + short.text.len();
        short.text.len() >= 3 && long.probs[..at].iter().chain(&long.probs[end..]).all(|&p| p >= SURE_EDGE)
    };
    let votes = |t: &PlateText| reads.iter().filter(|r| supports(t, r)).count();
    let best = reads.iter().max_by(|a, b| votes(a).cmp(&votes(b)).then(a.likeness.total_cmp(&b.likeness)))?;
    // Plate text is normalised to A–Z and 0–9: one byte a character.
    let backbone = best.text.as_bytes();
    let aligned: Vec<&PlateText> = reads
        .iter()
        .filter(|r| {
            let t = r.text.as_bytes();
            t.len() == backbone.len() && 3 * t.iter().zip(backbone).filter(|(a, b)| a != b).count() <= t.len()
        })
        .collect();
    let mut pooled = best.clone();
    let mut text = String::with_capacity(backbone.len());
    for (i, p) in pooled.probs.iter_mut().enumerate() {
        // Per character: its summed and its surest probability. `aligned` holds `best`, so no
        // position is without a vote.
        let mut tally: Vec<(u8, f32, f32)> = Vec::new();
        for r in &aligned {
            let (c, q) = (r.text.as_bytes()[i], r.probs[i]);
            match tally.iter_mut().find(|t| t.0 == c) {
                Some(t) => (t.1, t.2) = (t.1 + q, t.2.max(q)),
                None => tally.push((c, q, q)),
            }
        }
        let (c, _, surest) = tally.into_iter().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap_or((backbone[i], *p, *p));
        text.push(char::from(c));
        *p = surest;
    }
    pooled.text = text;
    pooled.confidence = pooled.probs.iter().copied().fold(1.0, f32::min);
    Some(pooled)
}

/// `region` (`[x1, y1, x2, y2]`) inside a `(width, height)` picture.
fn clip([x1, y1, x2, y2]: [u32; 4], (width, height): (u32, u32)) -> [u32; 4] {
    [x1.min(width), y1.min(height), x2.min(width), y2.min(height)]
}

/// The text detector's input size for a vehicle region: `side` wide ([`VEHICLE_DET_WIDTH`] at
/// first; taller regions are held to a square of that side), multiples of 32.
fn vehicle_det_size(width: u32, height: u32, side: u32) -> (u32, u32) {
    let (w, h) = (width.max(1) as f32, height.max(1) as f32);
    let side = side as f32;
    let scale = (side / w).min(side / h);
    (textdet::stride(w * scale), textdet::stride(h * scale))
}

/// The recogniser input for a line: 48 px high, aspect kept, padded right to at least 320.
fn rec_tensor(line: &RgbImage) -> (u32, Vec<f32>) {
    let aspect = line.width() as f32 / line.height().max(1) as f32;
    let w = ((REC_HEIGHT as f32 * aspect).ceil() as u32).clamp(8, 4 * REC_MIN_WIDTH);
    let width = w.max(REC_MIN_WIDTH).div_ceil(8) * 8;
    let whole = [0, 0, line.width(), line.height()];
    (width, textdet::tensor(line, whole, (w, REC_HEIGHT), width, Normalise { mean: [0.5; 3], std: [0.5; 3] }))
}

/// Cut the blue country bands (EU strip, Italian year band) off a straightened plate, so their
/// letters are not read as part of the number.
fn trim_bands(line: &RgbImage) -> RgbImage {
    let (w, h) = line.dimensions();
    if w < 40 || h < 8 {
        return line.clone();
    }
    let blue_column = |x: u32| {
        let blue = (h / 5..h - h / 5)
            .filter(|&y| {
                let [r, g, b] = line.get_pixel(x, y).0.map(i32::from);
                b > 70 && b > r + 35 && b > g + 10
            })
            .count();
        blue as u32 * 2 >= h - 2 * (h / 5)
    };
    let limit = w / 5;
    let edge = |columns: &mut dyn Iterator<Item = u32>| {
        let mut run = 0;
        let mut started = false;
        for (i, x) in columns.enumerate() {
            if blue_column(x) {
                started = true;
                run = i as u32 + 1;
            } else if started || i as u32 > w / 25 {
                break;
            }
        }
        if run >= w / 30 && run <= limit { run } else { 0 }
    };
    let left = edge(&mut (0..w));
    let right = edge(&mut (0..w).rev());
    if left == 0 && right == 0 {
        return line.clone();
    }
    line.view(left, 0, w - left - right, h).to_image()
}

/// Paint over the small coloured marks between a plate's characters (coats of arms, inspection
/// stickers), which the recogniser otherwise reads as a letter. Left alone when the colour is the
/// text's own (many coloured blobs, or much of the line coloured).
fn mask_emblems(mut line: RgbImage) -> RgbImage {
    const MAX_EMBLEMS: usize = 2;
    let (w, h) = line.dimensions();
    if w < 40 || h < 12 {
        return line;
    }
    let chroma = |px: &image::Rgb<u8>| {
        let [r, g, b] = px.0.map(i32::from);
        r.max(g).max(b) - r.min(g).min(b)
    };
    // Small, dim crops carry little colour, so the bar is set against the line's own noise.
    let mut all: Vec<i32> = line.pixels().map(chroma).collect();
    all.sort_unstable();
    let bar = (all[all.len() / 2] * 5 / 2).max(30);
    let coloured = |px: &image::Rgb<u8>| chroma(px) > bar;
    let rows = h / 6..h - h / 6;
    let counts: Vec<u32> =
        (0..w).map(|x| rows.clone().filter(|&y| coloured(line.get_pixel(x, y))).count() as u32).collect();
    if counts.iter().sum::<u32>() * 4 > w * rows.len() as u32 {
        return line;
    }
    // Runs of columns with colour in a sixth of their height.
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for (x, &n) in (0u32..).zip(&counts) {
        if n * 6 < rows.len() as u32 {
            continue;
        }
        match runs.last_mut() {
            Some((_, end)) if *end + 2 >= x => *end = x,
            _ => runs.push((x, x)),
        }
    }
    // Coloured marks off the edges, no wider than a character. More of them than a plate carries
    // emblems are its characters' strokes, printed in colour (maroon, blue and green text is
    // common), and the bold ones among them are as solid as an emblem.
    let marks: Vec<(u32, u32)> =
        runs.into_iter().filter(|r| r.0 > 0 && r.1 + 1 < w && (2..=h * 4 / 5).contains(&(r.1 - r.0 + 1))).collect();
    if marks.len() > MAX_EMBLEMS {
        return line;
    }
    // An emblem is a solid blob at least a sixth of the height wide.
    let solid = |&(a, b): &(u32, u32)| {
        let n: u32 = counts[a as usize..=b as usize].iter().sum();
        b - a + 1 >= h / 6 && n * 3 >= (b - a + 1) * rows.len() as u32
    };
    let emblems: Vec<(u32, u32)> = marks.into_iter().filter(solid).collect();
    if emblems.is_empty() {
        return line;
    }
    // The plate's background: the brightest common tone.
    let mut lum: Vec<(u32, image::Rgb<u8>)> =
        line.pixels().map(|p| (p.0.iter().map(|&v| u32::from(v)).sum(), *p)).collect();
    lum.sort_by_key(|l| l.0);
    let background = lum[lum.len() * 9 / 10].1;
    for (a, b) in emblems {
        let ys: Vec<u32> = (0..h).filter(|&y| (a..=b).any(|x| coloured(line.get_pixel(x, y)))).collect();
        let (top, bottom) = (ys[0], ys[ys.len() - 1]);
        for y in top..=bottom {
            for x in a.saturating_sub(1)..=(b + 1).min(w - 1) {
                line.put_pixel(x, y, background);
            }
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// A white 200 × 40 line with dark bars for characters at `bars`, each `colour`.
    fn line(bars: &[u32], colour: Rgb<u8>) -> RgbImage {
        let mut img = RgbImage::from_pixel(200, 40, Rgb([235, 235, 235]));
        for &x0 in bars {
            for x in x0..x0 + 10 {
                for y in 6..34 {
                    img.put_pixel(x, y, colour);
                }
            }
        }
        img
    }

    #[test]
    fn an_emblem_between_characters_is_painted_over() {
        let mut img = line(&[10, 30, 80, 100, 120], Rgb([20, 20, 20]));
        for x in 52..66 {
            for y in 12..30 {
                img.put_pixel(x, y, Rgb([200, 30, 40]));
            }
        }
        let masked = mask_emblems(img.clone());
        assert_eq!(*masked.get_pixel(58, 20), Rgb([235, 235, 235]));
        // The characters are untouched.
        assert_eq!(*masked.get_pixel(35, 20), Rgb([20, 20, 20]));
        assert_eq!(*masked.get_pixel(85, 20), Rgb([20, 20, 20]));
    }

    fn text(t: &str, probs: &[f32]) -> PlateText {
        PlateText { likeness: 0.5, ..PlateText::sample(t, probs) }
    }

    /// A read of `t` on a 100 × 20 line whose top is at `y`.
    fn at(t: &str, y: f32) -> PlateRead {
        sized(t, y, 20.0)
    }

    /// A read of `t` on a 100 × `h` line whose top is at `y`.
    fn sized(t: &str, y: f32, h: f32) -> PlateRead {
        PlateRead { text: text(t, &[0.99; 7]), quad: Quad([(0.0, y), (100.0, y), (100.0, y + h), (0.0, y + h)]) }
    }

    /// A read of `t` on a `w` × 20 line from `x` along the row whose top is at 0.
    fn along(t: &str, x: f32, w: f32) -> PlateRead {
        PlateRead { text: text(t, &[0.99; 7]), quad: Quad([(x, 0.0), (x + w, 0.0), (x + w, 20.0), (x, 20.0)]) }
    }

    #[test]
    fn a_serial_continuing_a_longer_unread_line_in_a_scene_is_not_a_plate() {
        let texts = |reads: &[PlateRead]| reads.iter().map(|r| r.text.text.clone()).collect::<Vec<_>>();
        let whole = |a: &PlateRead, b: &PlateRead| Quad([a.quad.0[0], b.quad.0[1], b.quad.0[2], a.quad.0[3]]);
        // A sticker's `Call 1-800 2ADVISE`, too long for a plate and so not a candidate, ran on
        // into its fleet number `3479CH`; the joined line did not read as a plate either.
        let (phone, fleet) = (along("", 0.0, 140.0), along("3479CH", 150.0, 60.0));
        let sticker = (whole(&phone, &fleet), vec![phone.quad, fleet.quad]);
        // A van's painted name, read as a word, beside its plate: the plate stays.
        let (name, van) = (along("METRO", 300.0, 120.0), along("2DA044", 430.0, 60.0));
        let painted = (whole(&name, &van), vec![name.quad, van.quad]);
        // A plate split at its gap whose joined line misread: its unread letter group is
        // narrower than its serial part, which stays.
        let (district, rest) = (along("", 600.0, 25.0), along("828AG", 635.0, 55.0));
        let plate = (whole(&district, &rest), vec![district.quad, rest.quad]);
        let unread = [phone.quad, district.quad];
        let mut reads = vec![fleet, name, van, rest];
        drop_continued_text(&mut reads, &unread, &[sticker, painted, plate]);
        assert_eq!(texts(&reads), ["METRO", "2DA044", "828AG"]);
    }

    #[test]
    fn a_vehicles_plate_is_its_tallest_serial() {
        let texts = |reads: &[PlateRead]| reads.iter().map(|r| r.text.text.clone()).collect::<Vec<_>>();
        // A model badge two thirds the plate's height, and a far plate a third of it, go; a
        // second serial nearly as tall stays (two plates side by side are for the caller to
        // tell apart), and so does a word, which `admit_vanity` judges.
        let mut reads = vec![
            sized("E150", 100.0, 32.0),
            sized("7FR971", 200.0, 50.0),
            sized("PJT2809", 10.0, 16.0),
            sized("AB123", 0.0, 40.0),
            sized("FORD", 50.0, 10.0),
        ];
        keep_tallest_serials(&mut reads);
        assert_eq!(texts(&reads), ["7FR971", "AB123", "FORD"]);
        // With no serial, nothing is dropped.
        let mut reads = vec![sized("FORD", 50.0, 10.0), sized("GWAGEN", 250.0, 30.0)];
        keep_tallest_serials(&mut reads);
        assert_eq!(reads.len(), 2);
    }

    #[test]
    fn a_word_is_a_vehicles_plate_only_low_on_it_tall_enough_and_with_no_serial_in_view() {
        let texts = |reads: &[PlateRead]| reads.iter().map(|r| r.text.text.clone()).collect::<Vec<_>>();
        // A serial in view: the dealer's name under it is its frame.
        let mut reads = vec![at("ABC1234", 300.0), at("AUTOHAUS", 330.0)];
        admit_vanity(&mut reads, (0, 400), 0.0);
        assert_eq!(texts(&reads), ["ABC1234"]);
        // None: the first low word of plate length is the plate; a badge high up, a short word
        // and a second word are not.
        let mut reads =
            vec![at("SPORTLINE", 300.0), at("CAMRY", 40.0), at("JEEP", 310.0), at("GWAGEN", 250.0), at("ROADS", 320.0)];
        admit_vanity(&mut reads, (0, 400), 0.0);
        assert_eq!(texts(&reads), ["GWAGEN"]);
        // The region's own top counts: the same word high in a box lower in the image is refused.
        let mut reads = vec![at("GWAGEN", 250.0)];
        admit_vanity(&mut reads, (200, 600), 0.0);
        assert!(reads.is_empty());
        // A badge's lettering is too small to be a plate on a vehicle that wide; a plate's is not.
        let least = PLATE_LINE_SHARE * 1500.0;
        let mut reads = vec![sized("HYUNDAI", 300.0, 22.0)];
        admit_vanity(&mut reads, (0, 400), least);
        assert!(reads.is_empty());
        let mut reads = vec![sized("HYUNDAI", 300.0, 22.0), sized("GWAGEN", 250.0, 60.0)];
        admit_vanity(&mut reads, (0, 400), least);
        assert_eq!(texts(&reads), ["GWAGEN"]);
    }

    #[test]
    fn a_vehicles_words_are_read_again_only_where_no_line_read_as_a_serial() {
        let word = |t: &str| vec![text(t, &vec![0.99; t.len()])];
        // A state name, the plate, a slogan: only the plate is worth a second look.
        let lines = [word("FLORIDA"), word("ABC1234"), word("SUNSHINE"), Vec::new()];
        assert_eq!(reread(&lines, Search::Vehicle), [1]);
        // In a scene the word may be another vehicle's plate, read short.
        assert_eq!(reread(&lines, Search::Scene).len(), REREAD_LINES);
        // No serial in view: the two most plate-like words (a vanity plate may be one of them).
        let words = [word("KAYAKER"), Vec::new(), word("GWAGEN"), word("FORD")];
        let mut again = reread(&words, Search::Vehicle);
        again.sort();
        assert_eq!(again.len(), REREAD_LINES);
        assert!(again.iter().all(|&i| !words[i].is_empty()));
    }

    #[test]
    fn a_line_read_as_a_serial_in_one_crop_is_a_serial() {
        let reads = vec![text("781601", &[0.99; 6]), text("781601", &[0.99; 6]), text("L781601", &[0.7; 7])];
        assert_eq!(pool(reads).unwrap().text, "L781601");
    }

    #[test]
    fn a_shaved_read_votes_for_the_whole_line() {
        // As found, the box cut the last character; both grown boxes kept it, surely.
        let reads = vec![text("DH7X31", &[0.9; 6]), text("DH7X317", &[0.9; 7]), text("DH7X317", &[0.7; 7])];
        let pooled = pool(reads).unwrap();
        assert_eq!(pooled.text, "DH7X317");
        assert!((pooled.confidence - 0.9).abs() < 1e-6, "each character as sure as its surest read");
        // An unsure extra character at the end (a bolt, a frame's edge) gets no vote from the shorter reads.
        let mut bolt = vec![0.95; 6];
        bolt.push(0.4);
        let reads = vec![text("DH7X31", &[0.9; 6]), text("DH7X31", &[0.9; 6]), text("DH7X31I", &bolt)];
        assert_eq!(pool(reads).unwrap().text, "DH7X31");
        assert!(pool(Vec::new()).is_none());
    }

    #[test]
    fn a_read_with_a_small_mark_cut_off_does_not_vote_for_the_read_holding_it() {
        // New Jersey's `10-DTM 59`: two crops had the small `59` cut off, the widest kept it.
        let cut = PlateText { trimmed: true, ..text("10DTM", &[0.9; 5]) };
        let reads = vec![cut.clone(), cut, text("10DTM59", &[0.95; 7])];
        assert_eq!(pool(reads).unwrap().text, "10DTM");
    }

    #[test]
    fn a_glyph_one_crop_misread_is_outvoted() {
        // No two crops agree on the whole line, and the most plate-like says D…5; per character,
        // O has 0.6 + 0.7 against D's 0.9, and 5 has 0.6 + 0.9 against 6's 0.7.
        let mut reads = vec![text("OEL1145", &[0.6; 7]), text("DEL1145", &[0.9; 7]), text("OEL1146", &[0.7; 7])];
        reads[1].likeness = 0.9;
        let pooled = pool(reads).unwrap();
        assert_eq!(pooled.text, "OEL1145");
        assert!((pooled.probs[0] - 0.7).abs() < 1e-6, "each character as sure as its surest read");
        assert!((pooled.probs[6] - 0.9).abs() < 1e-6);
        // A read that differs in more than a third of its characters is another line: no vote,
        // however sure it is.
        let reads = vec![text("AB1234", &[0.99; 6]), text("XY9934", &[0.4; 6]), text("XY9934", &[0.4; 6])];
        assert_eq!(pool(reads).unwrap().text, "XY9934");
    }

    #[test]
    fn coloured_text_is_left_alone() {
        let img = line(&[10, 30, 50, 70, 90, 110, 130], Rgb([30, 40, 160]));
        assert_eq!(mask_emblems(img.clone()), img);
        // Maroon text in a thin face with two bold characters (`K17 9658`): the bold ones are as
        // solid as an emblem, but they are text.
        let mut img = line(&[], Rgb([0, 0, 0]));
        for (x0, width) in [(10, 14), (34, 3), (50, 3), (80, 3), (100, 3), (120, 3), (140, 14)] {
            for x in x0..x0 + width {
                for y in 6..34 {
                    img.put_pixel(x, y, Rgb([120, 30, 40]));
                }
            }
        }
        assert_eq!(mask_emblems(img.clone()), img);
    }
}
