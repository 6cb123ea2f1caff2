//! `-o` naming an existing special file (a FIFO here, `/dev/null` in real
//! life) is written in place: the atomic temp-file-and-rename would replace
//! the node with a plain file (as root, `/dev/null` itself).

#[cfg(unix)]
#[test]
fn writing_to_a_fifo_keeps_the_fifo() {
    use std::io::Read;
    use std::os::unix::fs::FileTypeExt;

    let dir = std::env::temp_dir().join(format!("onnxq-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("out.onnx");
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        panic!("mkfifo is needed for this test");
    }
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut bytes = vec![];
            std::fs::File::open(fifo)
                .unwrap()
                .read_to_end(&mut bytes)
                .unwrap();
            bytes
        })
    };
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let model = onnxq::import::import_file(models.join("mlp.onnx")).unwrap();
    onnxq::emit::write_file(&model, &fifo).unwrap();
    let bytes = reader.join().unwrap();
    assert!(!bytes.is_empty());
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    let back = onnxq::import::import_bytes(&bytes, None, &Default::default());
    assert!(back.is_ok(), "the FIFO carried a whole model");
    std::fs::remove_dir_all(&dir).unwrap();
}
