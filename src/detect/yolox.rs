//! YOLOX output decoding: grid offsets, exp sizes, score = obj·cls, per-class NMS.
//!
//! The exported graph stops before decoding: each row is `tx, ty, tw, th, obj, cls…` for one grid
//! cell, with the grids of every stride concatenated (52², 26², 13² at 416).

use super::Detection;
use crate::geometry::iou;

/// One grid cell: its column, row and stride.
#[derive(Debug, Clone, Copy)]
pub struct Anchor {
    gx: f32,
    gy: f32,
    stride: f32,
}

/// The cells of an input of `width`×`height`, in output row order.
pub fn grid(width: u32, height: u32, strides: &[u32]) -> Vec<Anchor> {
    let mut cells = Vec::new();
    for &s in strides {
        for gy in 0..height / s {
            for gx in 0..width / s {
                cells.push(Anchor { gx: gx as f32, gy: gy as f32, stride: s as f32 });
            }
        }
    }
    cells
}

/// Decode raw rows into frame-pixel detections (`scale` is the letterbox factor, `offset` the
/// crop origin, `limits` the frame size), then suppress overlaps within each class.
#[allow(clippy::too_many_arguments)]
pub fn decode(
    rows: &[f32],
    grid: &[Anchor],
    classes: usize,
    scale: f32,
    offset: (f32, f32),
    limits: (f32, f32),
    min_score: f32,
    nms_iou: f32,
) -> Vec<Detection> {
    let width = 5 + classes;
    let mut found = Vec::new();
    for (row, a) in rows.chunks_exact(width).zip(grid) {
        let obj = row[4];
        if obj < min_score {
            continue;
        }
        let (class, cls) =
            row[5..].iter().enumerate().fold((0, f32::MIN), |best, (i, &v)| if v > best.1 { (i, v) } else { best });
        let score = obj * cls;
        if score < min_score {
            continue;
        }
        let (cx, cy) = ((row[0] + a.gx) * a.stride, (row[1] + a.gy) * a.stride);
        let (w, h) = (row[2].exp() * a.stride, row[3].exp() * a.stride);
        let to_frame = |v: f32, o: f32, max: f32| (v / scale + o).clamp(0.0, max);
        let bbox = [
            to_frame(cx - w / 2.0, offset.0, limits.0),
            to_frame(cy - h / 2.0, offset.1, limits.1),
            to_frame(cx + w / 2.0, offset.0, limits.0),
            to_frame(cy + h / 2.0, offset.1, limits.1),
        ];
        found.push(Detection { class, score, bbox });
    }
    nms(found, nms_iou)
}

/// Greedy per-class non-maximum suppression, best score first.
pub fn nms(mut dets: Vec<Detection>, iou_limit: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::with_capacity(dets.len());
    for d in dets {
        if kept.iter().all(|k| k.class != d.class || iou(&k.bbox, &d.bbox) <= iou_limit) {
            kept.push(d);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_matches_the_output_layout() {
        let g = grid(416, 416, &[8, 16, 32]);
        assert_eq!(g.len(), 3549);
        assert_eq!((g[52].gx, g[52].gy, g[52].stride), (0.0, 1.0, 8.0));
        assert_eq!((g[2704].gx, g[2704].stride), (0.0, 16.0));
    }

    #[test]
    fn decode_maps_back_through_letterbox_and_crop() {
        let g = grid(64, 64, &[32]);
        let mut rows = vec![0f32; 4 * 7];
        // Cell (1, 0): centre (1.5·32, 0.5·32) = (48, 16), size 32×32 (exp(0)·32); class 1.
        rows[7..14].copy_from_slice(&[0.5, 0.5, 0.0, 0.0, 0.9, 0.1, 0.8]);
        let d = decode(&rows, &g, 2, 0.5, (100.0, 10.0), (1000.0, 1000.0), 0.3, 0.45);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].class, 1);
        assert!((d[0].score - 0.72).abs() < 1e-6);
        assert_eq!(d[0].bbox, [164.0, 10.0, 228.0, 74.0]);
    }

    #[test]
    fn nms_is_per_class() {
        let a = Detection { class: 0, score: 0.9, bbox: [0.0, 0.0, 10.0, 10.0] };
        let b = Detection { class: 0, score: 0.8, bbox: [1.0, 1.0, 10.0, 10.0] };
        let c = Detection { class: 1, score: 0.7, bbox: [1.0, 1.0, 10.0, 10.0] };
        assert_eq!(nms(vec![b, c, a], 0.45), vec![a, c]);
    }
}
