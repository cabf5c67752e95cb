//! The file-level loader entry, `weights::load`, on the bytes of a whole file of any size:
//! bounded reading (header first, then exactly what it promises), format detection and
//! both parsers. An error or a model, never a crash.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use tinylm::weights;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("tinylm-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("input.bin");
    {
        let mut file = std::fs::File::create(&path).expect("a temporary file");
        file.write_all(data).expect("written");
    }
    if let Ok(loaded) = weights::load(&path) {
        assert_eq!(loaded.model.params().len(), loaded.model.layout.total);
        assert_eq!(
            weights::detect_file_format(&path).expect("readable"),
            loaded.format
        );
    }
});
