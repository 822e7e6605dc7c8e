//! Thread-pool tuning for the `nin` process.
//!
//! Besides rayon's pool (one thread per core, where the convolutions, norms and pooling run),
//! candle keeps a second pool for its own element-wise ops (gradient sums, the optimiser's
//! updates), whose workers spin for 25,000 pause instructions after every op before they sleep.
//! With rayon on every core that spinning takes turns with real work: on the 2-core development
//! machine it was about 5 % of a training step's CPU samples, and parking sooner gave about 3 %
//! more images/s (`docs/performance.md`). An explicit `CANDLE_BARRIER_POOL_SPIN_LIMIT` wins.

/// The spin limit `nin` gives candle's pool unless the environment sets one.
const SPIN_LIMIT: &str = "64";

/// Makes candle's element-wise pool park soon after each op. Call first thing in `main`, before
/// any other thread exists and before candle starts its pool (it reads the setting once).
pub fn park_candle_pool_early() {
    const VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";
    if std::env::var_os(VAR).is_none() {
        std::env::set_var(VAR, SPIN_LIMIT);
    }
}
