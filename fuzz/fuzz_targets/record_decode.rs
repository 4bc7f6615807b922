#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| resilient_kv_fuzz::record_decode(data));
