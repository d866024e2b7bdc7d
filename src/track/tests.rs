use super::*;

fn det(class: usize, score: f32, cx: f32, cy: f32, w: f32, h: f32) -> Detection {
    Detection { class, score, bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0] }
}

fn confirmed(changes: &[Change]) -> Vec<u64> {
    changes.iter().filter_map(|c| if let Change::Confirmed(id) = c { Some(*id) } else { None }).collect()
}

/// The id of the track nearest to `x`.
fn id_near(tracker: &Tracker, x: f32) -> u64 {
    tracker
        .tracks()
        .iter()
        .min_by(|a, b| (centre(&a.bbox)[0] - x).abs().total_cmp(&(centre(&b.bbox)[0] - x).abs()))
        .unwrap()
        .id
}

#[test]
fn crossing_people_keep_their_ids_through_an_occlusion() {
    let mut tr = Tracker::new(&TrackerConfig::default(), 1);
    let fps = 5.0;
    let (mut left_id, mut right_id) = (0, 0);
    for i in 0..30 {
        let t = i as f64 / fps;
        // One walks right, one walks left, crossing at x = 300 around frame 15.
        let a = 150.0 + 10.0 * i as f32;
        let b = 450.0 - 10.0 * i as f32;
        let mut dets = vec![det(0, 0.9, a, 200.0, 60.0, 160.0)];
        // While they overlap, the one behind is hidden for two frames, then half-visible (low score).
        match i {
            14 | 15 => {}
            16 => dets.push(det(0, 0.3, b, 200.0, 60.0, 160.0)),
            _ => dets.push(det(0, 0.9, b, 200.0, 60.0, 160.0)),
        }
        let changes = tr.update(&dets, |_| 0.5, t);
        assert!(!changes.iter().any(|c| matches!(c, Change::Ended(_))), "frame {i}: {changes:?}");
        if i == 5 {
            (left_id, right_id) = (id_near(&tr, a), id_near(&tr, b));
            assert_ne!(left_id, right_id);
        }
        if i == 29 {
            assert_eq!(id_near(&tr, a), left_id, "the walker going right kept its id");
            assert_eq!(id_near(&tr, b), right_id, "the walker going left kept its id");
        }
    }
    assert_eq!(tr.tracks().len(), 2);
}

#[test]
fn a_parked_car_starts_once_however_rarely_it_is_seen() {
    let mut tr = Tracker::new(&TrackerConfig::default(), 1);
    let car = det(2, 0.8, 400.0, 300.0, 200.0, 100.0);
    let mut starts = Vec::new();
    let mut became_stationary = false;
    // Seen at 5 fps for 15 s, then only every 20 s (when motion nearby triggers detection).
    let times: Vec<f64> = (0..75).map(|i| i as f64 / 5.0).chain((1..16).map(|i| 15.0 + 20.0 * i as f64)).collect();
    for t in times {
        let jitter = ((t * 7.0).sin() * 3.0) as f32;
        let d = Detection { bbox: [car.bbox[0] + jitter, car.bbox[1], car.bbox[2] + jitter, car.bbox[3]], ..car };
        let changes = tr.update(&[d], |_| 0.5, t);
        starts.extend(confirmed(&changes));
        became_stationary |= changes.iter().any(|c| matches!(c, Change::Stationary(_)));
        assert!(!changes.iter().any(|c| matches!(c, Change::Ended(_))), "t={t}: {changes:?}");
    }
    assert_eq!(starts.len(), 1);
    assert!(became_stationary);
    assert!(!tr.has_moving(), "a stationary car does not keep detection running");
}

#[test]
fn flickers_shorter_than_min_hits_never_confirm() {
    let mut tr = Tracker::new(&TrackerConfig::default(), 1);
    let mut all = Vec::new();
    for i in 0..20 {
        // A detection that lasts two frames, disappears, and comes back elsewhere.
        let dets = if i % 4 < 2 { vec![det(0, 0.6, 100.0 + 50.0 * i as f32, 100.0, 40.0, 80.0)] } else { vec![] };
        all.extend(confirmed(&tr.update(&dets, |_| 0.5, i as f64 * 0.2)));
    }
    assert!(all.is_empty(), "{all:?}");
}

#[test]
fn a_lost_track_ends_after_max_age() {
    let mut tr = Tracker::new(&TrackerConfig::default(), 1);
    for i in 0..5 {
        tr.update(&[det(2, 0.9, 100.0 + 20.0 * i as f32, 100.0, 80.0, 40.0)], |_| 0.5, i as f64 * 0.2);
    }
    assert!(tr.update(&[], |_| 0.5, 1.5).is_empty());
    let ended = tr.update(&[], |_| 0.5, 3.5);
    assert!(matches!(ended.as_slice(), [Change::Ended(t)] if t.hits == 5));
}
