//! An image handed to `nin predict`: any bytes must decode to 32×32 RGB pixels or give an error,
//! never a panic or a multi-gigabyte allocation from a declared size.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(pixels) = nin_zoo::decode_rgb_chw(data, 32, 32) {
        assert_eq!(pixels.len(), 3 * 32 * 32);
    }
});
