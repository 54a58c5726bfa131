//! Fuzz targets for the two parsers a node runs on untrusted bytes: the bundle container with its
//! signatures (`Verifier::open`) and the signed manifest (`Manifest::from_signed_bytes`). Each
//! replays its committed inputs in `__fuzz__/<target>/{corpus,crashes}` and then random ones
//! (`nonstop_fuzzing` says why each has a mutated twin). The property: nothing panics or
//! hangs, and a bundle is opened only if an independent reading of the documented layout finds a
//! trusted signature over its manifest and a payload matching the manifest's digest.
//!
//! Longer: `BOLERO_RANDOM_ITERATIONS=200000 cargo test -p nonstop-bundle --test it fuzz::`.

use std::path::Path;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use nonstop_bundle::{
    BundleError, BundleLimits, ComponentKind, Draft, Intent, KeyId, Manifest, PayloadEncoding,
    SecretKey, TrustedKeys, VerifiedBundle, Verifier, create, seal, seal_bytes,
};
use nonstop_fuzzing::{Corpus, Recipe, Target, recipes};
use sha2::Digest as _;

/// Random inputs after the committed ones. A debug build verifies an ed25519 signature in about
/// 11 ms; these counts keep the four targets to about 10 s of one core.
const RANDOM: usize = 300;
const MUTATED: usize = 1000;

/// The payload every seed bundle of this publisher carries, so a manifest resealed by the
/// manifest target still matches its payload.
const PAYLOAD: &[u8] = b"\0asm fuzzing seed payload";

fn publisher() -> SecretKey {
    SecretKey::from_seed([77; 32])
}

/// A key the verifier does not trust, as during a key rotation.
fn stranger() -> SecretKey {
    SecretKey::from_seed([78; 32])
}

fn verifier() -> Verifier {
    let mut trusted = TrustedKeys::new();
    trusted.add(publisher().public());
    trusted.add(nonstop_bundle::release_key());
    Verifier::new(trusted, BundleLimits::default())
}

/// The trusted keys as raw ed25519 keys, for the independent check.
fn trusted_keys() -> Vec<(KeyId, VerifyingKey)> {
    let publisher = ed25519_dalek::SigningKey::from_bytes(&[77; 32]).verifying_key();
    let text = nonstop_bundle::release_key().to_file_text();
    let file: serde_json::Value = serde_json::from_str(&text).unwrap();
    let bytes = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        file["public_key"].as_str().unwrap(),
    )
    .unwrap();
    let release = VerifyingKey::from_bytes(&bytes.try_into().unwrap()).unwrap();
    [publisher, release]
        .into_iter()
        .map(|k| (KeyId::of(&k), k))
        .collect()
}

fn target(name: &'static str) -> Target {
    Target::new(
        name,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it"),
        Path::new(env!("CARGO_TARGET_TMPDIR")),
    )
}

/// The live version the node would have: none, older or newer, chosen by the input.
fn live_for(input: &[u8]) -> Option<semver::Version> {
    match input.len() % 3 {
        0 => None,
        1 => Some(semver::Version::new(1, 0, 0)),
        _ => Some(semver::Version::new(2, 0, 0)),
    }
}

#[test]
fn bundle() {
    let t = target("bundle");
    bolero::check!(name = "bundle")
        .with_iterations(RANDOM)
        .for_each(|input| t.check(input, opens_only_if_signed));
}

#[test]
fn bundle_mutated() {
    let t = target("bundle");
    let corpus = t.corpus().with_words(&[
        nonstop_bundle::MAGIC,
        b"\0\x01",
        b"\0\0\0\0\0\0\0\0",
        b"\"format\": 2",
        b"\"size\": 0",
    ]);
    bolero::check!(name = "bundle-mutated")
        .with_generator(recipes())
        .with_iterations(MUTATED)
        .with_shrink_time(Duration::ZERO)
        .for_each(|recipe| {
            // Half the edits keep the framing intact, so they reach the signature and digest.
            let input = if recipe.0 % 2 == 0 {
                corpus.mutate(recipe)
            } else {
                edit_sections(&corpus, recipe)
            };
            t.check(&input, opens_only_if_signed)
        });
}

#[test]
fn manifest() {
    let t = target("manifest");
    bolero::check!(name = "manifest")
        .with_iterations(RANDOM)
        .for_each(|input| t.check(input, parses_as_the_verifier_reads_it));
}

#[test]
fn manifest_mutated() {
    let t = target("manifest");
    let corpus = t.corpus().with_words(&[
        b"\"rollback\"",
        b"\"delta\"",
        b"\"wasm-component\"",
        b"\"format\"",
        b"\"key_id\"",
        b"\"payload\"",
    ]);
    bolero::check!(name = "manifest-mutated")
        .with_generator(recipes())
        .with_iterations(MUTATED)
        .with_shrink_time(Duration::ZERO)
        .for_each(|recipe| t.check(&corpus.mutate(recipe), parses_as_the_verifier_reads_it));
}

/// Opens `input` as a node would; an accepted bundle must pass the independent check, a refused
/// one must say why, and framing errors must be the same whether opening or inspecting.
fn opens_only_if_signed(input: &[u8]) {
    let live = live_for(input);
    let inspected = nonstop_bundle::inspect(input, &BundleLimits::default());
    match verifier().open(input, live.as_ref()) {
        Ok(bundle) => {
            independently_valid(input, &bundle, live.as_ref());
            let inspected = inspected.expect("an opened bundle can be inspected");
            assert_eq!(inspected.manifest.as_ref().ok(), Some(bundle.manifest()));
            assert!(inspected.signers.contains(&bundle.signer()));
            assert_eq!(inspected.payload_size, bundle.payload().len() as u64);
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            if let Err(framing) = inspected {
                assert_eq!(framing.to_string(), e.to_string());
            }
        }
    }
}

/// Parses `input` as a signed manifest, then seals it with a trusted key and opens it: the
/// verifier must accept exactly the manifests the parser accepts (refusing only for the checks
/// made after parsing), and an accepted manifest must survive being written and read again.
fn parses_as_the_verifier_reads_it(input: &[u8]) {
    let parsed = Manifest::from_signed_bytes(input);
    if let Ok(m) = &parsed {
        m.validate().expect("a parsed manifest is valid");
        let written = serde_json::to_vec(m).unwrap();
        let again = Manifest::from_signed_bytes(&written).expect("a written manifest parses");
        assert_eq!(
            serde_json::to_vec(&again).unwrap(),
            written,
            "the manifest changed when written and read again"
        );
    }
    // The verifier parses with the same function once the signature verifies, so a manifest it
    // refuses is sealed and opened only one time in eight: the signature costs 11 ms in debug.
    if parsed.is_err() && !input.len().is_multiple_of(8) {
        return;
    }
    let live = live_for(input);
    let bundle = seal_bytes(input, PAYLOAD, &[&publisher()]);
    match (verifier().open(&bundle, live.as_ref()), &parsed) {
        (Ok(opened), Ok(m)) => {
            assert_eq!(opened.manifest(), m);
            independently_valid(&bundle, &opened, live.as_ref());
        }
        (Ok(_), Err(e)) => panic!("opened a bundle whose manifest the parser refuses: {e}"),
        (Err(e), Ok(_)) => assert!(
            matches!(
                e,
                BundleError::KeyMismatch { .. }
                    // A valid manifest may claim more payload than this node takes of its kind.
                    | BundleError::TooLarge {
                        section: "payload",
                        ..
                    }
                    | BundleError::SizeMismatch { .. }
                    | BundleError::DigestMismatch { .. }
                    | BundleError::AlreadyLive { .. }
                    | BundleError::Downgrade { .. }
                    | BundleError::RollbackMismatch { .. }
            ),
            "a parsed manifest was refused before its payload and version were checked: {e}"
        ),
        (Err(e), Err(parse)) => assert_eq!(e.to_string(), parse.to_string()),
    }
}

/// The checks `Verifier::open` promises, made again from the layout in `container.rs`'s
/// documentation with ed25519 and SHA-256 called directly.
fn independently_valid(input: &[u8], bundle: &VerifiedBundle, live: Option<&semver::Version>) {
    let layout = Layout::read(input).expect("an opened bundle follows the documented layout");
    assert_eq!(bundle.bytes(), input);
    assert_eq!(bundle.payload(), layout.payload);

    // The first signature by a trusted key is the signer's, and it verifies.
    let keys = trusted_keys();
    let (id, sig) = layout
        .signatures
        .iter()
        .find(|(id, _)| keys.iter().any(|(k, _)| k.0 == *id))
        .expect("an opened bundle carries a trusted key's signature");
    assert_eq!(*id, bundle.signer().0);
    let key = &keys.iter().find(|(k, _)| k.0 == *id).unwrap().1;
    let message = [
        b"nonstop update bundle\0".as_slice(),
        &[0, 1],
        layout.manifest,
    ]
    .concat();
    key.verify_strict(&message, &ed25519_dalek::Signature::from_bytes(sig))
        .expect("the signer's signature verifies over the manifest bytes");

    // The signed manifest says what the bundle is.
    let m = bundle.manifest();
    assert_eq!(
        Manifest::from_signed_bytes(layout.manifest).unwrap(),
        *m,
        "the opened manifest is not the signed one"
    );
    assert_eq!(m.key_id, bundle.signer());
    assert_eq!(m.payload.size, layout.payload.len() as u64);
    assert_eq!(
        m.payload.digest.0,
        <[u8; 32]>::from(sha2::Sha256::digest(layout.payload))
    );
    assert_eq!(m.payload.encoding, PayloadEncoding::Full);
    match (&m.intent, live) {
        (Intent::Release, None) => {}
        (Intent::Release, Some(live)) => assert!(m.version.cmp_precedence(live).is_gt()),
        (Intent::Rollback { from }, live) => assert_eq!(Some(from), live),
    }
}

/// The bundle `recipe` describes, edited section by section: its manifest, payload, signature
/// bytes or signature list, then laid out again with lengths and count that match, so an edit
/// is caught by the signature or digest check rather than by the framing.
fn edit_sections(corpus: &Corpus, (pick, edits): &Recipe) -> Vec<u8> {
    let seed = &corpus.seeds()[usize::from(pick / 2) % corpus.seeds().len()];
    let Some(layout) = Layout::read(seed) else {
        return corpus.mutate(&(*pick, edits.clone()));
    };
    let mut manifest = layout.manifest.to_vec();
    let mut signatures = layout.signatures.clone();
    let mut payload = layout.payload.to_vec();
    for &(kind, at, arg, word) in edits {
        let edit = (kind % 14, at, arg, word);
        match kind / 14 % 4 {
            0 => corpus.edit(&mut manifest, edit),
            1 => corpus.edit(&mut payload, edit),
            2 => {
                let mut block: Vec<u8> = signatures
                    .iter()
                    .flat_map(|(id, s)| id.iter().chain(s))
                    .copied()
                    .collect();
                corpus.edit(&mut block, edit);
                signatures = block
                    .chunks_exact(72)
                    .map(|c| (c[..8].try_into().unwrap(), c[8..].try_into().unwrap()))
                    .collect();
            }
            _ if signatures.is_empty() => {}
            _ => {
                let i = at as usize % signatures.len();
                match arg % 3 {
                    0 => {
                        signatures.remove(i);
                    }
                    1 => signatures.insert(0, signatures[i]),
                    _ => signatures.swap(0, i),
                }
            }
        }
    }
    Layout {
        manifest: &manifest,
        signatures,
        payload: &payload,
    }
    .write()
}

/// A bundle split by the layout documented in `container.rs`, written here a second time.
struct Layout<'a> {
    manifest: &'a [u8],
    signatures: Vec<([u8; 8], [u8; 64])>,
    payload: &'a [u8],
}

impl<'a> Layout<'a> {
    fn read(mut b: &'a [u8]) -> Option<Layout<'a>> {
        let mut take = |n: usize| -> Option<&'a [u8]> {
            let (head, rest) = b.split_at_checked(n)?;
            b = rest;
            Some(head)
        };
        if take(8)? != b"NSBUNDLE" || take(2)? != [0, 1] {
            return None;
        }
        let manifest_len = u32::from_be_bytes(take(4)?.try_into().ok()?);
        let manifest = take(manifest_len as usize)?;
        let count = take(1)?[0];
        if !(1..=8).contains(&count) {
            return None;
        }
        let mut signatures = Vec::new();
        for _ in 0..count {
            let id = take(8)?.try_into().ok()?;
            let sig = take(64)?.try_into().ok()?;
            signatures.push((id, sig));
        }
        let payload_len = u64::from_be_bytes(take(8)?.try_into().ok()?);
        let payload = take(usize::try_from(payload_len).ok()?)?;
        if !b.is_empty() {
            return None;
        }
        Some(Layout {
            manifest,
            signatures,
            payload,
        })
    }

    fn write(&self) -> Vec<u8> {
        let mut out = b"NSBUNDLE\0\x01".to_vec();
        out.extend_from_slice(&(self.manifest.len() as u32).to_be_bytes());
        out.extend_from_slice(self.manifest);
        out.push(self.signatures.len() as u8);
        for (id, sig) in &self.signatures {
            out.extend_from_slice(id);
            out.extend_from_slice(sig);
        }
        out.extend_from_slice(&(self.payload.len() as u64).to_be_bytes());
        out.extend_from_slice(self.payload);
        out
    }
}

/// The committed bundles named `valid-*` still open: a seed that stops opening after a format
/// change would leave the targets fuzzing only the refusals.
#[test]
fn valid_seed_bundles_still_open() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/__fuzz__/bundle/corpus");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("valid-") {
            let bytes = std::fs::read(&path).unwrap();
            let live = name
                .contains("rollback")
                .then(|| semver::Version::new(2, 0, 0));
            verifier()
                .open(&bytes, live.as_ref())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            seen += 1;
        }
    }
    assert!(
        seen >= 3,
        "only {seen} valid seed bundles in {}",
        dir.display()
    );
}

/// Writes the seed corpora of both targets. Run after a format change, then commit the files:
/// `cargo test -p nonstop-bundle --test it fuzz::write_seed_corpus -- --ignored`.
#[test]
#[ignore = "writes the seed corpus into the source tree"]
fn write_seed_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/__fuzz__");
    let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../modules");
    let mut release = Draft::new(
        "fees",
        ComponentKind::WasmComponent,
        "1.1.0".parse().unwrap(),
        "fees.wasm",
    )
    .unwrap();
    release.notes = "night clinic surcharge".into();
    release.checks =
        serde_json::from_slice(&std::fs::read(modules.join("fees-v2/checks.json")).unwrap())
            .unwrap();
    release.checks.shadow = Some(nonstop_bundle::ShadowCheck {
        calls: 40,
        max_latency_ratio: 1.5,
    });
    let mut rollback = Draft::new(
        "triage",
        ComponentKind::WasmComponent,
        "1.0.0".parse().unwrap(),
        "triage.wasm",
    )
    .unwrap();
    rollback.intent = Intent::Rollback {
        from: "2.0.0".parse().unwrap(),
    };
    let minimal = Draft::new(
        "q",
        ComponentKind::StaticAssets,
        "0.0.1-rc.1+b".parse().unwrap(),
        "x",
    )
    .unwrap();

    let good = create(&release, PAYLOAD, &publisher()).unwrap();
    let manifest_of = |bytes: &[u8]| {
        nonstop_bundle::inspect(bytes, &BundleLimits::default())
            .unwrap()
            .manifest
            .unwrap()
    };
    let m = manifest_of(&good);
    let mut delta = m.clone();
    delta.payload.encoding = PayloadEncoding::Delta {
        base_version: "1.0.0".parse().unwrap(),
        base_digest: m.payload.digest,
    };
    let mut tampered = good.clone();
    *tampered.last_mut().unwrap() ^= 1;

    let bundles: Vec<(&str, Vec<u8>)> = vec![
        ("valid-release.nsb", good.clone()),
        (
            "valid-rollback.nsb",
            create(&rollback, PAYLOAD, &publisher()).unwrap(),
        ),
        (
            "valid-rotation.nsb",
            seal(&m, PAYLOAD, &[&stranger(), &publisher()]),
        ),
        (
            "valid-factory-triage-2.0.0.nsb",
            std::fs::read(modules.join("factory/triage-2.0.0.nsb")).unwrap(),
        ),
        (
            "unknown-key.nsb",
            create(&release, PAYLOAD, &stranger()).unwrap(),
        ),
        ("delta.nsb", seal(&delta, PAYLOAD, &[&publisher()])),
        ("tampered-payload.nsb", tampered),
    ];
    let dir = root.join("bundle/corpus");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in &bundles {
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    let dir = root.join("manifest/corpus");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, draft) in [
        ("release.json", &release),
        ("rollback.json", &rollback),
        ("minimal.json", &minimal),
    ] {
        let bundle = create(draft, PAYLOAD, &publisher()).unwrap();
        let json = serde_json::to_vec_pretty(&manifest_of(&bundle)).unwrap();
        std::fs::write(dir.join(name), json).unwrap();
    }
    let json = serde_json::to_vec_pretty(&delta).unwrap();
    std::fs::write(dir.join("delta.json"), json).unwrap();
}
