//! Bit-exact copies of the random streams the official LoadGen draws from: `std::mt19937` and the
//! libstdc++ (GCC >= 11) algorithms layered on it (uniform integers, shuffle, canonical doubles,
//! exponential variates).

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;
/// 2^32 as a float, the range of one engine draw.
const TWO_POW_32: f64 = 4_294_967_296.0;

/// The 32-bit Mersenne Twister (`std::mt19937`).
#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; N],
    index: usize,
}

impl Mt19937 {
    /// The seed C++ uses for a default-constructed engine.
    pub const DEFAULT_SEED: u64 = 5489;

    /// Seeds the engine like `std::mt19937(seed)`: the seed is taken modulo 2^32.
    pub fn new(seed: u64) -> Self {
        let mut state = [0u32; N];
        state[0] = seed as u32;
        for i in 1..N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Self { state, index: N }
    }

    fn twist(&mut self) {
        for i in 0..N {
            let y = (self.state[i] & UPPER_MASK) | (self.state[(i + 1) % N] & LOWER_MASK);
            let mut next = self.state[(i + M) % N] ^ (y >> 1);
            if y & 1 != 0 {
                next ^= MATRIX_A;
            }
            self.state[i] = next;
        }
        self.index = 0;
    }

    /// The next 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `std::uniform_int_distribution` on `[a, b]` as libstdc++ computes it.
    pub fn uniform_int(&mut self, a: u64, b: u64) -> u64 {
        a + self.uniform_below_inclusive(b.saturating_sub(a))
    }

    /// A value in `[0, urange]` (libstdc++ `operator()` with the engine range 2^32 - 1).
    fn uniform_below_inclusive(&mut self, urange: u64) -> u64 {
        const ENGINE_RANGE: u64 = u32::MAX as u64;
        match urange.cmp(&ENGINE_RANGE) {
            std::cmp::Ordering::Less => self.lemire(urange + 1),
            std::cmp::Ordering::Equal => u64::from(self.next_u32()),
            std::cmp::Ordering::Greater => {
                // Upscaling: combine a recursive draw of the high part with one raw draw.
                let engine_span = ENGINE_RANGE + 1;
                loop {
                    let high = self.uniform_below_inclusive(urange / engine_span);
                    let Some(tmp) = high.checked_mul(engine_span) else {
                        continue;
                    };
                    let ret = tmp.wrapping_add(u64::from(self.next_u32()));
                    if ret <= urange && ret >= tmp {
                        return ret;
                    }
                }
            }
        }
    }

    /// Lemire's nearly-divisionless method for a range `r < 2^32` (libstdc++ `_S_nd`).
    fn lemire(&mut self, r: u64) -> u64 {
        let mut product = u64::from(self.next_u32()) * r;
        let mut low = product as u32;
        let r32 = r as u32;
        if low < r32 {
            let threshold = r32.wrapping_neg() % r32;
            while low < threshold {
                product = u64::from(self.next_u32()) * r;
                low = product as u32;
            }
        }
        product >> 32
    }

    /// `std::generate_canonical<double, 53>`: two draws, low word first, clamped below 1.
    pub fn canonical(&mut self) -> f64 {
        let low = f64::from(self.next_u32());
        let high = f64::from(self.next_u32());
        let value = (low + high * TWO_POW_32) / (TWO_POW_32 * TWO_POW_32);
        if value >= 1.0 {
            1.0 - f64::EPSILON / 2.0
        } else {
            value
        }
    }

    /// `std::uniform_real_distribution<double>(0, 1)`.
    pub fn uniform_unit(&mut self) -> f64 {
        self.canonical()
    }

    /// `std::exponential_distribution<double>(rate)` in seconds.
    pub fn exponential(&mut self, rate: f64) -> f64 {
        -(1.0 - self.canonical()).ln() / rate
    }

    /// `std::shuffle` as libstdc++ implements it (two swaps per draw when the range allows).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        let n = v.len() as u64;
        if n < 2 {
            return;
        }
        if u64::from(u32::MAX) / n >= n {
            let mut i = 1usize;
            if n.is_multiple_of(2) {
                let j = self.uniform_int(0, 1) as usize;
                v.swap(1, j);
                i = 2;
            }
            while i < v.len() {
                let range = i as u64 + 1;
                let x = self.uniform_int(0, range * (range + 1) - 1);
                v.swap(i, (x / (range + 1)) as usize);
                v.swap(i + 1, (x % (range + 1)) as usize);
                i += 2;
            }
        } else {
            for i in 1..v.len() {
                let j = self.uniform_int(0, i as u64) as usize;
                v.swap(i, j);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_known_outputs() {
        let mut rng = Mt19937::new(Mt19937::DEFAULT_SEED);
        assert_eq!(rng.next_u32(), 3_499_211_612);
        for _ in 1..9_999 {
            rng.next_u32();
        }
        assert_eq!(rng.next_u32(), 4_123_659_995);
    }

    #[test]
    fn seed_is_taken_modulo_2_pow_32() {
        let mut a = Mt19937::new(5489 + (1u64 << 32));
        let mut b = Mt19937::new(5489);
        assert_eq!(a.next_u32(), b.next_u32());
    }

    #[test]
    fn lemire_is_in_range_and_full_range_is_raw() {
        let mut rng = Mt19937::new(1);
        for _ in 0..1000 {
            assert!(rng.uniform_int(3, 9) <= 9);
        }
        let mut raw = Mt19937::new(7);
        let mut full = Mt19937::new(7);
        assert_eq!(
            u64::from(raw.next_u32()),
            full.uniform_int(0, u64::from(u32::MAX))
        );
        let big = full.uniform_int(0, 1 << 40);
        assert!(big <= 1 << 40);
    }

    #[test]
    fn shuffle_matches_official_accuracy_load_order() {
        // Official LoadGen, qsl_rng_seed of mlperf.conf, 20 samples: the first loaded indices.
        let mut v: Vec<usize> = (0..20).collect();
        Mt19937::new(2_085_463_073_848_966_840).shuffle(&mut v);
        assert_eq!(&v[..8], &[1, 5, 13, 10, 11, 19, 12, 2]);
    }

    #[test]
    fn canonical_is_in_unit_interval() {
        let mut rng = Mt19937::new(Mt19937::DEFAULT_SEED);
        for _ in 0..1000 {
            let x = rng.canonical();
            assert!((0.0..1.0).contains(&x));
        }
    }
}
