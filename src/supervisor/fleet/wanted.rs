//! The cameras this deployment should run, from the file and the API, with no I/O: the fleet
//! changes it under a plain mutex that is never held across an await, then brings the running
//! cameras in line.

use std::collections::{BTreeMap, BTreeSet};

use super::saved::SavedCamera;
use super::{FleetError, Origin};
use crate::api::control::Diff;
use crate::config::{CameraConfig, Config};

/// A wanted camera's settings and who owns them.
pub(super) struct Entry {
    pub config: CameraConfig,
    pub origin: Origin,
}

/// The wanted cameras by id.
#[derive(Default)]
pub(super) struct Wanted {
    cameras: BTreeMap<String, Entry>,
    /// Bumped by every API change, so a refresh that read the database before the change does
    /// not undo it.
    generation: u64,
    /// Saved cameras that did not parse, warned about once.
    rejected: BTreeSet<String>,
    /// Set by shutdown: nothing is wanted any more.
    closed: bool,
}

/// What merging the saved cameras found.
#[derive(Default)]
pub(super) struct Merged {
    /// Saved ids the file also defines: the file wins, and the saved ones are to be forgotten.
    pub shadowed: Vec<String>,
    /// Saved cameras that no longer parse, the first time each is seen.
    pub invalid: Vec<(String, FleetError)>,
}

impl Wanted {
    /// Refuse changes once shutting down.
    pub fn open(&self) -> Result<(), FleetError> {
        if self.closed { Err(FleetError::Stopping) } else { Ok(()) }
    }

    /// Stop wanting anything, for good.
    pub fn close(&mut self) {
        self.closed = true;
        self.cameras.clear();
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Where camera `id`'s settings come from.
    pub fn origin(&self, id: &str) -> Option<Origin> {
        self.cameras.get(id).map(|e| e.origin)
    }

    /// The wanted ids.
    pub fn ids(&self) -> impl Iterator<Item = &String> {
        self.cameras.keys()
    }

    pub fn len(&self) -> usize {
        self.cameras.len()
    }

    /// The settings of the wanted cameras for which `here` holds.
    pub fn placed(&self, here: impl Fn(&str) -> bool) -> BTreeMap<String, CameraConfig> {
        self.cameras.iter().filter(|(id, _)| here(id)).map(|(id, e)| (id.clone(), e.config.clone())).collect()
    }

    /// Check that camera `id` is one the API owns; `file` names the config file in the refusal.
    pub fn api_owned(&self, id: &str, file: &str) -> Result<(), FleetError> {
        self.open()?;
        match self.origin(id) {
            None => Err(FleetError::NotFound(id.into())),
            Some(Origin::File) => Err(FleetError::FileOwned { id: id.into(), file: file.into() }),
            Some(Origin::Api) => Ok(()),
        }
    }

    /// Check that no camera `id` is wanted yet, and mark an API change as begun.
    pub fn begin_add(&mut self, id: &str) -> Result<(), FleetError> {
        self.open()?;
        if self.cameras.contains_key(id) {
            return Err(FleetError::Exists(id.into()));
        }
        self.generation += 1;
        Ok(())
    }

    /// Want API camera `cam` (added or replaced): refused if, meanwhile, the file took the id,
    /// shutdown began, or (`replace`) the camera was removed.
    pub fn put_api(&mut self, cam: CameraConfig, replace: bool) -> Result<(), FleetError> {
        self.open()?;
        match self.origin(&cam.id) {
            Some(Origin::File) => return Err(FleetError::Exists(cam.id)),
            None if replace => return Err(FleetError::NotFound(cam.id)),
            _ => {}
        }
        self.generation += 1;
        self.cameras.insert(cam.id.clone(), Entry { config: cam, origin: Origin::Api });
        Ok(())
    }

    /// Stop wanting API camera `id`.
    pub fn drop_api(&mut self, id: &str) {
        if self.origin(id) == Some(Origin::Api) {
            self.generation += 1;
            self.cameras.remove(id);
        }
    }

    /// Want the file's `cameras` (at start, or after a reload), in place of the file's earlier
    /// ones; API cameras with the same ids are replaced and returned in `diff.restarted`.
    /// Returns the diff and the API ids the file took over, to forget in the database.
    pub fn set_file(&mut self, cameras: Vec<CameraConfig>) -> (Diff, Vec<String>) {
        let mut diff = Diff::default();
        let mut taken = Vec::new();
        if self.closed {
            return (diff, taken);
        }
        let file: BTreeMap<String, CameraConfig> = cameras.into_iter().map(|c| (c.id.clone(), c)).collect();
        self.cameras.retain(|id, e| {
            let keep = e.origin == Origin::Api || file.contains_key(id);
            if !keep {
                diff.removed.push(id.clone());
            }
            keep
        });
        for (id, cam) in file {
            match self.cameras.get(&id) {
                Some(e) if e.origin == Origin::File && e.config == cam => diff.unchanged.push(id.clone()),
                Some(e) => {
                    if e.origin == Origin::Api {
                        taken.push(id.clone());
                    }
                    diff.restarted.push(id.clone());
                }
                None => diff.added.push(id.clone()),
            }
            self.cameras.insert(id, Entry { config: cam, origin: Origin::File });
        }
        (diff, taken)
    }

    /// Make the API cameras those in `saved`, as read from the database at `generation`; `None`
    /// (nothing changed) when an API change here began since, and the read may predate it.
    pub fn merge_saved(&mut self, saved: Vec<SavedCamera>, generation: u64) -> Option<Merged> {
        if self.closed || generation != self.generation {
            return None;
        }
        let mut merged = Merged::default();
        let ids: BTreeSet<&str> = saved.iter().map(|(id, _)| id.as_str()).collect();
        self.cameras.retain(|id, e| e.origin == Origin::File || ids.contains(id.as_str()));
        for (id, parsed) in saved {
            if self.origin(&id) == Some(Origin::File) {
                merged.shadowed.push(id);
                continue;
            }
            match parsed {
                Ok(config) => {
                    self.cameras.insert(id, Entry { config, origin: Origin::Api });
                }
                Err(e) => {
                    self.cameras.remove(&id);
                    if self.rejected.insert(id.clone()) {
                        merged.invalid.push((id, e));
                    }
                }
            }
        }
        Some(merged)
    }
}

/// The sections of `new` other than cameras that differ from `old`: they take effect only at
/// the next start.
pub(super) fn settings_changed(old: &Config, new: &Config) -> Vec<&'static str> {
    [
        ("database", old.database != new.database),
        ("redis", old.redis != new.redis),
        ("storage", old.storage != new.storage),
        ("server", old.server != new.server),
        ("models", old.models != new.models),
        ("inference", old.inference != new.inference),
        ("webhooks", old.webhooks != new.webhooks),
    ]
    .into_iter()
    .filter_map(|(name, differs)| differs.then_some(name))
    .collect()
}
