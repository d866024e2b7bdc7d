//! `vigil bench anpr DIR…`: plate-reading accuracy against ground truth (`NAME.txt`:
//! `file x y w h PLATE`, tab-separated).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde_json::json;
use vigil::anpr::PlateRead;
use vigil::anpr::looks::overlaps;
use vigil::plate::edit_distance;
use vigil::sample::Arrival;

#[derive(clap::Args)]
pub struct AnprArgs {
    /// Print one JSON object per folder instead of the table.
    #[arg(long)]
    json: bool,
    /// List every image whose best read is not the truth.
    #[arg(long)]
    misses: bool,
    /// Play the images to a live camera over RTSP instead (`--dedicated` sets its mode), and
    /// report its `anpr` events next to the still-image rate of the same images.
    #[arg(long)]
    stream: bool,
    /// In a `--stream` run, each vehicle comes from the distance towards the camera (growing from
    /// 15 % of its size over 2.5 s) instead of driving in from the right and stopping.
    #[arg(long, requires = "stream")]
    approach: bool,
    /// Images per folder in a `--stream` run: different plates, spread over the folder.
    #[arg(long, default_value_t = 30)]
    images: usize,
    /// The Redis a `--stream` run's camera publishes to.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    #[command(flatten)]
    options: crate::cmds::anpr::Options,
    /// Folders of images, each image with a `.txt` ground truth beside it.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
}

/// One folder's results, counted as DESIGN.md's "Plate accuracy" says: a plate is read right
/// when the annotated text is among the plates reported for the image, with O/0 and I/1 as one
/// glyph; strict exact is counted beside it.
#[derive(Default)]
struct Tally {
    images: usize,
    /// The annotated text is among the reported plates, character for character.
    exact: usize,
    /// The same with O/0 and I/1 counted as one glyph.
    folded: usize,
    /// The first (most plate-like) reported plate is the annotated one, folded.
    top1: usize,
    /// Reported plates on the annotated plate that are wrong, folded.
    wrong: usize,
    /// Reported plates elsewhere in the image: text taken for a plate, or another vehicle's plate
    /// (the sets annotate one plate per image), so an upper bound on false plates.
    elsewhere: usize,
    /// Images where nothing was reported on the annotated plate.
    unread: usize,
    char_score: f64,
    /// Reading, from a decoded image to its plates.
    millis: f64,
    /// Decoding the image file (a camera's frames come decoded).
    decode_millis: f64,
}

/// A plate's text with O/0 and I/1 as one glyph each.
pub(super) fn folded(text: &str) -> String {
    text.replace('O', "0").replace('I', "1")
}

pub fn run(args: AnprArgs) -> anyhow::Result<()> {
    let models = crate::cmds::anpr::Models::load(&args.options)?;
    if args.stream {
        return stream_report(&args, &models);
    }
    if !args.json {
        println!(
            "{:<20} {:>6} {:>7} {:>8} {:>7} {:>7} {:>7} {:>10} {:>8} {:>9}",
            "set", "images", "exact%", "folded%", "top1%", "char%", "wrong%", "else/img", "unread%", "ms/image"
        );
    }
    for dir in &args.dirs {
        let mut t = Tally::default();
        let before = super::model_time(&models.metrics);
        for truth in ground_truth(dir)? {
            let started = Instant::now();
            let image = crate::cmds::anpr::Models::open(&truth.image)?;
            let decoded = Instant::now();
            let reads = models.read_image(&image)?;
            t.decode_millis += (decoded - started).as_secs_f64() * 1000.0;
            t.millis += decoded.elapsed().as_secs_f64() * 1000.0;
            t.images += 1;
            let reported: Vec<_> = reads.iter().filter(|p| p.text.confidence >= models.min_confidence).collect();
            let want = folded(&truth.plate);
            t.exact += usize::from(reported.iter().any(|p| p.text.text == truth.plate));
            t.folded += usize::from(reported.iter().any(|p| folded(&p.text.text) == want));
            t.top1 += usize::from(reported.first().is_some_and(|p| folded(&p.text.text) == want));
            let (on, off): (Vec<&&PlateRead>, Vec<_>) = reported.iter().partition(|p| overlaps(p.bbox(), truth.bbox));
            let elsewhere: Vec<_> = off.iter().filter(|p| folded(&p.text.text) != want).collect();
            t.elsewhere += elsewhere.len();
            if args.misses {
                for p in elsewhere {
                    let (text, at) = (&p.text.text, p.bbox().map(|v| v as i32));
                    eprintln!("else {}: read {text:?} at {at:?}, {:.2}", truth.image.display(), p.text.confidence);
                }
            }
            t.wrong += on.iter().filter(|p| folded(&p.text.text) != want).count();
            t.unread += usize::from(on.is_empty());
            let read = on.first().map(|p| p.text.text.as_str()).unwrap_or("");
            t.char_score += 1.0 - (edit_distance(read, &truth.plate) as f64 / truth.plate.len() as f64).min(1.0);
            if args.misses && !reported.iter().any(|p| folded(&p.text.text) == want) {
                let seen: Vec<String> = reads
                    .iter()
                    .take(4)
                    .map(|p| {
                        format!(
                            "{}/{:.2}/{:.2}/{:?}/{:?}",
                            p.text.raw,
                            p.text.confidence,
                            p.text.likeness,
                            p.bbox().map(|v| v as i32),
                            p.text.probs.iter().map(|v| (v * 100.0) as i32).collect::<Vec<_>>()
                        )
                    })
                    .collect();
                eprintln!(
                    "miss {}: truth {} at {:?}, read {read:?}; {seen:?}",
                    truth.image.display(),
                    truth.plate,
                    truth.bbox.map(|v| v as i32)
                );
            }
        }
        let pct = |n: f64| 100.0 * n / t.images.max(1) as f64;
        let per_image = |n: usize| n as f64 / t.images.max(1) as f64;
        // Where the time goes: each model's calls, inputs and milliseconds per image; the rest is
        // image decoding, warping, plate logic and the batching hand-offs.
        let spent: Vec<(String, f64, f64, f64)> = super::model_time(&models.metrics)
            .into_iter()
            .map(|m| {
                let (c0, i0, s0) =
                    before.iter().find(|b| b.model == m.model).map_or((0, 0.0, 0.0), |b| (b.calls, b.inputs, b.secs));
                let n = t.images.max(1) as f64;
                (m.model, (m.calls - c0) as f64 / n, (m.inputs - i0) / n, (m.secs - s0) * 1000.0 / n)
            })
            .collect();
        // Measured after each set, so it shows this machine's speed while the set ran: a shared
        // machine's varies several times over from hour to hour.
        let raw = models.raw_costs()?;
        let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let ms = t.millis / t.images.max(1) as f64;
        if args.json {
            println!(
                "{}",
                json!({
                    "set": name, "images": t.images, "exact_pct": pct(t.exact as f64), "folded_pct": pct(t.folded as f64),
                    "top1_pct": pct(t.top1 as f64), "char_pct": pct(t.char_score), "wrong_pct": pct(t.wrong as f64),
                    "elsewhere_per_image": per_image(t.elsewhere), "unread_pct": pct(t.unread as f64), "ms_per_image": ms,
                    "decode_ms_per_image": t.decode_millis / t.images.max(1) as f64,
                    "models": spent.iter().map(|(m, calls, inputs, ms)| json!({"model": m, "calls_per_image": calls, "inputs_per_image": inputs, "ms_per_image": ms})).collect::<Vec<_>>(),
                    "raw": raw.iter().map(|r| json!({"model": r.model, "width": r.width, "height": r.height, "ms": r.ms})).collect::<Vec<_>>(),
                })
            );
        } else {
            println!(
                "{name:<20} {:>6} {:>7.1} {:>8.1} {:>7.1} {:>7.1} {:>7.1} {:>10.2} {:>8.1} {:>9.0}",
                t.images,
                pct(t.exact as f64),
                pct(t.folded as f64),
                pct(t.top1 as f64),
                pct(t.char_score),
                pct(t.wrong as f64),
                per_image(t.elsewhere),
                pct(t.unread as f64),
                ms
            );
            let models: f64 = spent.iter().map(|s| s.3).sum();
            let parts: Vec<String> = spent
                .iter()
                .map(|(m, calls, inputs, ms)| format!("{m} {ms:.0} ms ({calls:.1} calls, {inputs:.1} inputs)"))
                .collect();
            println!(
                "{:<20} time per image: {}, other {:.0} ms; decoding the file {:.0} ms more",
                "",
                parts.join(", "),
                ms - models,
                t.decode_millis / t.images.max(1) as f64
            );
            let raw: Vec<String> =
                raw.iter().map(|r| format!("{} {:.0} ms at {}×{}", r.model, r.ms, r.width, r.height)).collect();
            println!("{:<20} one raw call, this machine now: {}", "", raw.join(", "));
        }
    }
    Ok(())
}

/// `--stream`: per folder, the still-image rate of the picked images, then a camera's run.
fn stream_report(args: &AnprArgs, models: &crate::cmds::anpr::Models) -> anyhow::Result<()> {
    let mode = if args.options.dedicated { "dedicated" } else { "vehicle" };
    if !args.json {
        println!(
            "{:<20} {:>9} {:>6} {:>7} {:>8} {:>9} {:>6} {:>7} {:>11} {:>6} {:>8}",
            "set",
            "mode",
            "images",
            "still%",
            "stream%",
            "of still",
            "wrong",
            "events",
            "reads/event",
            "reads",
            "skipped"
        );
    }
    let arrival = if args.approach { Arrival::Approach } else { Arrival::Drive };
    for dir in &args.dirs {
        let picked = super::stream::pick(ground_truth(dir)?, args.images);
        let mut still = 0;
        for truth in &picked {
            let want = folded(&truth.plate);
            let reads = models.read(&truth.image)?;
            still += usize::from(
                reads.iter().any(|p| p.text.confidence >= models.min_confidence && folded(&p.text.text) == want),
            );
        }
        let run = super::stream::run(&picked, arrival, &args.options, &args.redis)?;
        if args.misses {
            eprintln!("stream misses: {:?}; wrong plates: {:?}", run.missed, run.wrong_plates);
            eprintln!("events (plate/confidence/reads): {}", run.listed.join(", "));
        }
        let n = picked.len().max(1) as f64;
        let (still_pct, stream_pct) = (100.0 * still as f64 / n, 100.0 * run.read as f64 / n);
        let of_still = if still == 0 { 0.0 } else { 100.0 * run.read as f64 / still as f64 };
        let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        if args.json {
            println!(
                "{}",
                json!({
                    "set": name, "mode": mode, "images": picked.len(), "still_pct": still_pct, "stream_pct": stream_pct,
                    "stream_of_still_pct": of_still, "wrong": run.wrong, "events": run.events,
                    "reads_per_event": run.reads_per_event, "plate_reads": run.plate_reads[0],
                    "skipped": run.plate_reads[1],
                })
            );
        } else {
            println!(
                "{name:<20} {mode:>9} {:>6} {still_pct:>7.1} {stream_pct:>8.1} {of_still:>8.0}% {:>6} {:>7} {:>11.1} {:>6} {:>8}",
                picked.len(),
                run.wrong,
                run.events,
                run.reads_per_event,
                run.plate_reads[0],
                run.plate_reads[1]
            );
        }
    }
    Ok(())
}

/// One annotated image.
pub(super) struct Truth {
    pub(super) image: PathBuf,
    bbox: [f32; 4],
    pub(super) plate: String,
}

/// Every annotated image in a folder, in name order.
pub(super) fn ground_truth(dir: &Path) -> anyhow::Result<Vec<Truth>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "txt") {
            continue;
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
        let fields: Vec<&str> = text.trim().split('\t').collect();
        let bad = || anyhow::anyhow!("{}: expected `file x y w h PLATE`, tab-separated", path.display());
        let [file, x, y, w, h, plate] = fields.as_slice() else { return Err(bad()) };
        let n = |v: &str| v.trim().parse::<f32>().map_err(|_| bad());
        let (x, y) = (n(x)?, n(y)?);
        let bbox = [x, y, x + n(w)?, y + n(h)?];
        out.push(Truth { image: dir.join(file), bbox, plate: vigil::plate::normalise(plate) });
    }
    out.sort_by(|a, b| a.image.cmp(&b.image));
    anyhow::ensure!(!out.is_empty(), "{}: no ground truth (.txt) files", dir.display());
    Ok(out)
}
