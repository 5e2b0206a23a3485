//! The multilingual sentence encoder on the model `models/fetch.sh` unpacks:
//! the same request in five languages lands closer together than different
//! requests in one language.

use std::path::PathBuf;

use voxline::dialog::intent::encoder::{SentenceEncoder, DIM};

fn encoder() -> SentenceEncoder {
    let dir =
        PathBuf::from(std::env::var_os("VOXLINE_MODELS_DIR").unwrap_or_else(|| "models".into()))
            .join("use-m3");
    SentenceEncoder::load(&dir).expect("models/use-m3 (./x setup fetches it)")
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn one_request_in_five_languages_is_closer_than_two_requests_in_one() {
    let enc = encoder();
    let cancel = [
        "I want to cancel my order",
        "quiero cancelar mi pedido",
        "voglio annullare il mio ordine",
        "quero cancelar a minha encomenda",
        "je veux annuler ma commande",
    ]
    .map(|t| enc.encode(t));
    let track = enc.encode("where is my parcel? it has not arrived");
    for v in cancel.iter().chain([&track]) {
        assert_eq!(v.len(), DIM);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "norm {norm}");
    }
    let across = cancel[1..].iter().map(|v| cosine(&cancel[0], v));
    let apart = cosine(&cancel[0], &track);
    for (i, sim) in across.enumerate() {
        if std::env::var_os("VOXLINE_PRINT").is_some() {
            eprintln!("{i} {sim} vs {apart}");
        }
        assert!(
            sim > apart + 0.2,
            "translation {i}: {sim} vs different request {apart}"
        );
    }
}

#[test]
fn empty_odd_and_very_long_text_give_a_unit_vector() {
    let enc = encoder();
    let long = "pedido ".repeat(2000);
    for text in ["", "   ", "😀🛒", "\u{0}\u{7f}", long.as_str()] {
        let v = enc.encode(text);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "{text:?}: norm {norm}");
    }
}

#[test]
fn a_missing_or_damaged_model_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = SentenceEncoder::load(dir.path()).err().expect("no model");
    assert!(err.to_string().contains("sp.model"), "{err}");
    std::fs::write(dir.path().join("sp.model"), b"\x0a\x05ab").expect("write");
    let err = SentenceEncoder::load(dir.path()).err().expect("damaged");
    assert!(err.to_string().contains("sp.model"), "{err}");
}

#[test]
fn many_texts_at_once_give_the_same_vectors_cached_or_not() {
    // The model's files linked into a scratch folder, so that its cache is
    // this test's own.
    let models =
        PathBuf::from(std::env::var_os("VOXLINE_MODELS_DIR").unwrap_or_else(|| "models".into()))
            .join("use-m3");
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["sp.model", "weights"] {
        std::os::unix::fs::symlink(
            std::fs::canonicalize(models.join(name)).expect("model file"),
            dir.path().join(name),
        )
        .expect("link");
    }
    let enc = SentenceEncoder::load(dir.path()).expect("encoder");
    let texts = [
        "¿dónde está mi pedido?",
        "annulla l'ordine 2210",
        "annulla l'ordine 2210",
        "obrigado!",
        "",
    ];
    let one_by_one: Vec<Vec<f32>> = texts.iter().map(|t| enc.encode(t)).collect();
    assert_eq!(enc.encode_all(&texts), one_by_one, "computed");
    let cache = dir.path().join("cache.bin");
    let written = std::fs::metadata(&cache).expect("cache written").len();
    assert_eq!(enc.encode_all(&texts), one_by_one, "read from the cache");
    assert_eq!(std::fs::metadata(&cache).expect("cache").len(), written);
    // A cache cut short is recomputed, not believed.
    let bytes = std::fs::read(&cache).expect("cache");
    std::fs::write(&cache, &bytes[..bytes.len() - 7]).expect("cut");
    assert_eq!(enc.encode_all(&texts), one_by_one, "after a damaged cache");
    assert_eq!(std::fs::metadata(&cache).expect("cache").len(), written);
    // A new text joins the cache beside the four distinct old ones: one
    // record more (its hash and 512 numbers).
    let more = ["je voudrais parler à quelqu'un", "obrigado!"];
    let expected: Vec<Vec<f32>> = more.iter().map(|t| enc.encode(t)).collect();
    assert_eq!(enc.encode_all(&more), expected);
    let grown = std::fs::metadata(&cache).expect("cache").len();
    assert_eq!(grown, written + 8 + 4 * DIM as u64);
}

/// Eight messages, short to 40 pieces (one thread and two, every way the
/// matrix products split their rows), against vectors kept from the
/// encoder's first version, which was checked against the wheel's numpy code.
#[test]
fn vectors_match_the_reference_kept_from_the_checked_version() {
    let e = encoder();
    let reference = include_str!("encoder/reference.tsv");
    let mut checked = 0;
    for line in reference.lines().filter(|l| !l.starts_with('#')) {
        let (text, numbers) = line.split_once('\t').expect("text<TAB>numbers");
        let expected: Vec<f32> = numbers
            .split(' ')
            .map(|n| n.parse().expect("a number"))
            .collect();
        assert_eq!(expected.len(), DIM);
        let got = e.encode(text);
        let c = cosine(&got, &expected);
        assert!(c > 0.99999, "{text:?}: cosine {c}");
        assert_eq!(got, e.encode(text), "{text:?}: two runs differ");
        checked += 1;
    }
    assert_eq!(checked, 8);
}
