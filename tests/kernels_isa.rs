//! Dispatch: detection, `available()`, `for_isa`, and the `ONNXQ_ISA` / `ONNXQ_ISA_ENSURE`
//! override (pure resolution logic, plus child processes for the real environment path).

use std::process::Command;

use onnxq::kernels::cpu::{choose, host, EnvOverride, HostFeatures};
use onnxq::kernels::fbgemm::{PackedB, QWeights};
use onnxq::kernels::{available, best, compiled, for_isa, Isa, IsaError};

fn pin(isa: &str, ensure: bool) -> EnvOverride {
    EnvOverride {
        isa: Some(isa.to_string()),
        ensure,
    }
}

fn all_kernels(_: Isa) -> bool {
    true
}

#[test]
fn isa_names_round_trip() {
    for isa in Isa::ALL {
        assert_eq!(Isa::parse(isa.as_str()), Some(isa));
        assert_eq!(Isa::parse(&isa.as_str().to_uppercase()), Some(isa));
    }
    assert_eq!(Isa::parse("sse9"), None);
}

#[test]
fn available_is_consistent() {
    let av = available();
    assert_eq!(
        av[0].isa,
        Isa::Scalar,
        "scalar is always available and first"
    );
    for w in av.windows(2) {
        assert!(w[0].isa < w[1].isa);
    }
    for k in av {
        assert!(host().supports(k.isa));
        assert!(std::ptr::eq(for_isa(k.isa).unwrap(), *k));
        assert!(!k.gemm_u8s8.is_empty());
        for uk in k.gemm_u8s8 {
            assert_eq!(uk.isa, k.isa, "{}", uk.name);
            assert!(usize::from(uk.nr) <= 64 && usize::from(uk.mr) <= 64);
        }
        // The last kernel of every set accepts any weights.
        assert_eq!(
            k.gemm_u8s8.last().unwrap().weights,
            onnxq::kernels::WeightRange::Full
        );
    }
    // Compiled-in but unsupported sets are not listed.
    for isa in Isa::ALL {
        if compiled(isa).is_some() && !host().supports(isa) {
            assert!(for_isa(isa).is_none());
        }
    }
}

#[test]
fn choose_without_pin_takes_the_best() {
    let h = HostFeatures {
        avx2: true,
        fma: true,
        ..HostFeatures::default()
    };
    assert_eq!(
        choose(&EnvOverride::default(), &h, all_kernels),
        Ok(Isa::Avx2)
    );
    let h512 = HostFeatures {
        avx2: true,
        avx512f: true,
        avx512bw: true,
        avx512vnni: true,
        avxvnni: true,
        ..h
    };
    assert_eq!(
        choose(&EnvOverride::default(), &h512, all_kernels),
        Ok(Isa::Avx512Vnni)
    );
    // AMX detected but no kernels compiled in: not chosen.
    let amx = HostFeatures {
        amx_int8: true,
        ..h512
    };
    assert_eq!(
        choose(&EnvOverride::default(), &amx, |i| i != Isa::Amx),
        Ok(Isa::Avx512Vnni)
    );
    assert_eq!(
        choose(
            &EnvOverride::default(),
            &HostFeatures::default(),
            all_kernels
        ),
        Ok(Isa::Scalar)
    );
}

#[test]
fn choose_with_pin() {
    let h = HostFeatures {
        avx2: true,
        ..HostFeatures::default()
    };
    assert_eq!(
        choose(&pin("scalar", true), &h, all_kernels),
        Ok(Isa::Scalar)
    );
    assert_eq!(choose(&pin("avx2", true), &h, all_kernels), Ok(Isa::Avx2));
    // Missing ISA: fallback, or a hard error with ensure.
    assert_eq!(
        choose(&pin("avx512vnni", false), &h, all_kernels),
        Ok(Isa::Avx2)
    );
    assert_eq!(
        choose(&pin("avx512vnni", true), &h, all_kernels),
        Err(IsaError::Unavailable(Isa::Avx512Vnni))
    );
    assert_eq!(
        choose(&pin("avxvnni", true), &h, all_kernels),
        Err(IsaError::Unavailable(Isa::AvxVnni))
    );
    assert_eq!(
        choose(&pin("neon", true), &h, all_kernels),
        Err(IsaError::Unknown("neon".into()))
    );
    assert_eq!(choose(&pin("neon", false), &h, all_kernels), Ok(Isa::Avx2));
}

/// In a CI job that pins an ISA with `ONNXQ_ISA_ENSURE=1`, fail (rather than skip) when the
/// host cannot run it, so the shared tester really covered that ISA.
#[test]
fn ensured_pin_is_available() {
    let ovr = EnvOverride::from_env();
    if let (Some(raw), true) = (&ovr.isa, ovr.ensure) {
        let isa = Isa::parse(raw).unwrap_or_else(|| panic!("ONNXQ_ISA={raw}: unknown ISA"));
        assert!(
            for_isa(isa).is_some(),
            "ONNXQ_ISA={raw} with ONNXQ_ISA_ENSURE=1, but this host cannot run it"
        );
        assert_eq!(best().isa, isa);
    }
}

const CHILD: &str = "ONNXQ_KERNELS_ISA_CHILD";

/// Runs `child_expect_best` in a fresh process (dispatch is decided once per process).
fn run_child(isa: &str, ensure: bool) -> std::process::Output {
    let exe = std::env::current_exe().unwrap();
    Command::new(exe)
        .args([
            "--exact",
            "child_expect_best",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, isa)
        .env("ONNXQ_ISA", isa)
        .env("ONNXQ_ISA_ENSURE", if ensure { "1" } else { "0" })
        .output()
        .expect("spawn test binary")
}

/// Child half of the pinning tests: no-op unless spawned by `pinned_process`.
#[test]
fn child_expect_best() {
    let Ok(want) = std::env::var(CHILD) else {
        return;
    };
    let want = Isa::parse(&want).unwrap();
    assert_eq!(best().isa, want);
    let w = [1i8; 12];
    let p = PackedB::new(
        &QWeights {
            data: &w,
            k: 3,
            n: 4,
            trans_b: false,
            zp: &[0],
            bias: None,
        },
        0,
    )
    .unwrap();
    assert_eq!(p.ukernel().isa, want);
    println!("CHILD-OK {want}");
}

#[test]
fn pinned_process() {
    for isa in Isa::ALL {
        let out = run_child(isa.as_str(), true);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let ok = out.status.success() && stdout.contains("CHILD-OK");
        let expect_ok = for_isa(isa).is_some();
        assert_eq!(
            ok,
            expect_ok,
            "ONNXQ_ISA={isa} ONNXQ_ISA_ENSURE=1: child {} (stdout: {stdout}, stderr: {})",
            if ok { "passed" } else { "failed" },
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
