//! Identity of the emulated LoadGen build (the 6.0.17 wheel), logged first in every detail log.

/// `loadgen_version`.
pub const LOADGEN_VERSION: &str = "6.0.17 @ d6147c7eb7";
/// `loadgen_build_date_local`.
pub const BUILD_DATE_LOCAL: &str = "2026-07-24T17:39:47.375441";
/// `loadgen_build_date_utc`.
pub const BUILD_DATE_UTC: &str = "2026-07-24T17:39:47.375453";
/// `loadgen_git_commit_date`.
pub const GIT_COMMIT_DATE: &str = "2026-07-24T17:36:50Z";
/// `loadgen_git_log_message`, already JSON-escaped as the original writes it.
pub const GIT_LOG_MESSAGE_ESCAPED: &str = "d6147c7eb760c75ac2f7f2dd379719afb090d87c Increment version to 6.0.17\\nda26cb17af33bc90328b17b18b3d9ab9617e3017 Add pre-commit setup documentation (#2597)";
/// `loadgen_git_status_message`.
pub const GIT_STATUS_MESSAGE: &str = "";
/// `loadgen_file_sha1`: SHA-1 of every file of the LoadGen sources, by path.
pub const FILE_SHA1: &[(&str, &str)] = &[
    ("/.clang-format", "012aad77e5206c89d50718c46c119d1f3cb056b2"),
    (
        "/CMakeLists.txt",
        "a8ebd64f62d0349aeedbe3295d833ebdce625c2e",
    ),
    ("/MANIFEST.in", "ddeb472d62edf2920db1f8fa3beebe3e831557f1"),
    ("/README.md", "e850133bdbbfa62c84bc05a7358114d8996e0530"),
    (
        "/README_BUILD.md",
        "a7e4fcdb5572fa084dcb084f1b4cb658b4b7f38f",
    ),
    ("/README_FAQ.md", "01f9ae9887f50bc030dc6107e740f40c43ca388f"),
    ("/VERSION.txt", "03056092f3833b9ef9baca45be0b5815ac32386f"),
    ("/__init__.py", "d013101621ef06a0ddc5e7d9ce511918a8b2ebe6"),
    (
        "/bindings/c_api.cc",
        "14d178b64c7fc45d090e038c08d9b78ca943c383",
    ),
    (
        "/bindings/c_api.h",
        "23d9f99e00b2d196e095fae0bb453a391c18d601",
    ),
    (
        "/bindings/python_api.cc",
        "90e9c362d9c0e3fdb7d9fad70b34227d7b70f205",
    ),
    (
        "/diagram_network_submission.png",
        "53dba8ad4272190ceb6335c12fd25e53dc02a8cb",
    ),
    (
        "/diagram_submission.png",
        "84c2f79309b237cef652aef6a187ba8e875a3952",
    ),
    (
        "/early_stopping.cc",
        "0cd7b546a389deac73f7955cd39255ed76557d62",
    ),
    (
        "/early_stopping.h",
        "158fcae6a5f47e82150d6416fa1f7bcef37e77fe",
    ),
    (
        "/issue_query_controller.cc",
        "02fcfe6d9cf958eeb4b6f1f4dbe87ba7eb4d7dec",
    ),
    (
        "/issue_query_controller.h",
        "ed20934fd3507a15949d501ac154be38e766f6ab",
    ),
    ("/loadgen.cc", "86bc3765857092b9d1f380604b101c771679842a"),
    ("/loadgen.h", "ce9fcb5d44951e7e9048a83b7c1a41c8b8e0f7d8"),
    (
        "/loadgen_integration_diagram.svg",
        "47f748307536f80cfc606947b440dd732afc2637",
    ),
    ("/logging.cc", "49e63158ebca654fa4b7c5f3321054cf4d6c3a30"),
    ("/logging.h", "2102c91dedbaa156beadf0cecc63d2f43a2bd7dd"),
    ("/mlperf.conf", "68cdba8667e971c3ae8f1617ba67fa56d01065b4"),
    ("/mlperf_conf.h", "38da7558f78803df3800bb5e92569151ed2219b0"),
    (
        "/pyproject.toml",
        "712fab87b72ba67ef2a068d0f9f47da65130342f",
    ),
    (
        "/query_dispatch_library.h",
        "1f18e9cd3ee4dc89a387cf462de1d0ceb1ece975",
    ),
    (
        "/query_sample.h",
        "c4f399103bc3d172079bbd4cd2b0ca0f22eebc4f",
    ),
    (
        "/query_sample_library.h",
        "8323a2225be1dff31f08ecc86b76eb3de06568bc",
    ),
    (
        "/requirements.txt",
        "a5ff7e77caa6e9e22ada90f0de0c865c987bf167",
    ),
    ("/results.cc", "fde4e173d3ec8461dd439ff0d8e605b52c4becf5"),
    ("/results.h", "fce22d5a588d91fd968a6b25c27896dba87bc276"),
    ("/setup.py", "8dd48aeee1f0cdb30e27d53033bad4989ea11489"),
    (
        "/system_under_test.h",
        "18d4809589dae33317d88d9beeb5491a6e1ccdec",
    ),
    (
        "/test_settings.h",
        "088be02e337dd5610a991e8beac38cfb0fe49d3a",
    ),
    (
        "/test_settings_internal.cc",
        "1e6b962f1e22450b3e0ced24292230c64d23e20a",
    ),
    (
        "/test_settings_internal.h",
        "711a06cde66a3b817556ce3ca05b62ca163220c6",
    ),
    ("/utils.cc", "3df8fdabf6eaea4697cf25d1dcb89cae88e36efd"),
    ("/utils.h", "40775e32d619ea6356826ae5ea4174c7911f6894"),
    ("/version.cc", "cbec2a5f98f9786c8c3d8b06b3d12df0b6550fa0"),
    ("/version.h", "9d574baa64424e9c708fcfedd3dbb0b518a65fcc"),
    (
        "/version_generator.py",
        "be0b9c82b7701d713d577e8c3132bb460d5ec849",
    ),
];
