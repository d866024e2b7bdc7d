//! A constant-velocity Kalman filter for one box coordinate.
//!
//! The SORT/ByteTrack 8-state box filter has block-diagonal transition and diagonal noise, so it
//! splits exactly into four independent (position, velocity) filters like this one. Noise scales
//! with the box height, and time is in seconds so uneven detection intervals are handled.

/// Position noise per √second, as a fraction of box height.
const PROCESS_POS: f32 = 0.25;
/// Velocity noise per √second, as a fraction of box height.
const PROCESS_VEL: f32 = 0.5;
/// Measurement noise, as a fraction of box height.
const MEASURE: f32 = 0.05;

#[derive(Debug, Clone)]
pub struct Axis {
    pos: f32,
    vel: f32,
    /// Covariance [[pp, pv], [pv, vv]].
    pp: f32,
    pv: f32,
    vv: f32,
    t: f64,
}

impl Axis {
    pub fn new(z: f32, t: f64, scale: f32) -> Self {
        Self { pos: z, vel: 0.0, pp: (0.1 * scale).powi(2), pv: 0.0, vv: scale.powi(2), t }
    }

    pub fn position_at(&self, t: f64) -> f32 {
        self.pos + self.vel * (t - self.t).max(0.0) as f32
    }

    fn predict(&mut self, t: f64, scale: f32) {
        let dt = (t - self.t).max(0.0) as f32;
        self.pos += self.vel * dt;
        // P = F P Fᵀ + Q, F = [[1, dt], [0, 1]]
        self.pp += dt * (2.0 * self.pv + dt * self.vv) + (PROCESS_POS * scale).powi(2) * dt;
        self.pv += dt * self.vv;
        self.vv += (PROCESS_VEL * scale).powi(2) * dt;
        self.t = t;
    }

    pub fn update(&mut self, z: f32, t: f64, scale: f32) {
        self.predict(t, scale);
        let s = self.pp + (MEASURE * scale).powi(2);
        let (kp, kv) = (self.pp / s, self.pv / s);
        let innovation = z - self.pos;
        self.pos += kp * innovation;
        self.vel += kv * innovation;
        let (pp, pv, vv) = (self.pp, self.pv, self.vv);
        self.pp = (1.0 - kp) * pp;
        self.pv = (1.0 - kp) * pv;
        self.vv = vv - kv * pv;
    }
}
