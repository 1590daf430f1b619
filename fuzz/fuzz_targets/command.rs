#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| deeb_fuzz::check_command(data));
