//! `vigil bench anpr DIR…`: plate-reading accuracy against ground truth (`NAME.txt`:
//! `file x y w h PLATE`, tab-separated).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde_json::json;
use vigil::anpr::plate::edit_distance;
use vigil::anpr::still::overlaps;

#[derive(clap::Args)]
pub struct AnprArgs {
    /// Print one JSON object per folder instead of the table.
    #[arg(long)]
    json: bool,
    /// List every image whose best read is not the truth.
    #[arg(long)]
    misses: bool,
    #[command(flatten)]
    options: crate::cmds::anpr::Options,
    /// Folders of images, each image with a `.txt` ground truth beside it.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
}

/// One folder's results.
#[derive(Default)]
struct Tally {
    images: usize,
    exact: usize,
    /// Exact when O and 0 count as one glyph (the ground truth mixes them up on some plates).
    exact_o0: usize,
    /// Confident reads of the annotated plate that are wrong.
    wrong: usize,
    /// Wrong even when O and 0 count as one glyph.
    wrong_o0: usize,
    unread: usize,
    /// Confident reads elsewhere in the image (other vehicles' plates, or text taken for one).
    other: usize,
    char_score: f64,
    millis: f64,
}

pub fn run(args: AnprArgs) -> anyhow::Result<()> {
    let models = crate::cmds::anpr::Models::load(&args.options)?;
    if !args.json {
        println!(
            "{:<20} {:>6} {:>7} {:>9} {:>7} {:>7} {:>9} {:>8} {:>7} {:>9}",
            "set", "images", "exact%", "exact0=O%", "char%", "false%", "false0=O%", "unread%", "other%", "ms/image"
        );
    }
    for dir in &args.dirs {
        let mut t = Tally::default();
        for truth in ground_truth(dir)? {
            let started = Instant::now();
            let reads = models.read(&truth.image)?;
            t.millis += started.elapsed().as_secs_f64() * 1000.0;
            t.images += 1;
            let confident: Vec<_> = reads.iter().filter(|p| p.text.confidence >= models.min_confidence).collect();
            let (on, off): (Vec<_>, Vec<_>) = confident.into_iter().partition(|p| overlaps(p.bbox(), truth.bbox));
            t.other += usize::from(!off.is_empty());
            let read = on.first().map(|p| p.text.text.as_str()).unwrap_or("");
            t.char_score += 1.0 - (edit_distance(read, &truth.plate) as f64 / truth.plate.len() as f64).min(1.0);
            let glyphs = |t: &str| t.replace('O', "0");
            t.exact_o0 += usize::from(on.first().is_some_and(|p| glyphs(&p.text.text) == glyphs(&truth.plate)));
            match on.first() {
                Some(p) if p.text.text == truth.plate => t.exact += 1,
                Some(p) => {
                    t.wrong += 1;
                    t.wrong_o0 += usize::from(glyphs(&p.text.text) != glyphs(&truth.plate));
                }
                None => t.unread += 1,
            }
            if args.misses && read != truth.plate {
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
        let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let ms = t.millis / t.images.max(1) as f64;
        if args.json {
            println!(
                "{}",
                json!({
                    "set": name, "images": t.images, "exact_pct": pct(t.exact as f64), "exact_o0_pct": pct(t.exact_o0 as f64),
                    "char_pct": pct(t.char_score), "false_pct": pct(t.wrong as f64), "false_o0_pct": pct(t.wrong_o0 as f64),
                    "unread_pct": pct(t.unread as f64), "other_pct": pct(t.other as f64), "ms_per_image": ms,
                })
            );
        } else {
            println!(
                "{name:<20} {:>6} {:>7.1} {:>9.1} {:>7.1} {:>7.1} {:>9.1} {:>8.1} {:>7.1} {:>9.0}",
                t.images,
                pct(t.exact as f64),
                pct(t.exact_o0 as f64),
                pct(t.char_score),
                pct(t.wrong as f64),
                pct(t.wrong_o0 as f64),
                pct(t.unread as f64),
                pct(t.other as f64),
                ms
            );
        }
    }
    Ok(())
}

/// One annotated image.
struct Truth {
    image: PathBuf,
    bbox: [f32; 4],
    plate: String,
}

/// Every annotated image in a folder, in name order.
fn ground_truth(dir: &Path) -> anyhow::Result<Vec<Truth>> {
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
        out.push(Truth { image: dir.join(file), bbox, plate: vigil::anpr::plate::normalise(plate) });
    }
    out.sort_by(|a, b| a.image.cmp(&b.image));
    anyhow::ensure!(!out.is_empty(), "{}: no ground truth (.txt) files", dir.display());
    Ok(out)
}
