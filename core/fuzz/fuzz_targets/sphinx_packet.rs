#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| postern_core_fuzz::sphinx_packet(data));
