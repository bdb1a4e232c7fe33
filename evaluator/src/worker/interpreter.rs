//! Starts the embedded CPython of an evaluator worker with a configuration that ignores
//! the process environment entirely.
//!
//! This is the one place in the evaluator that needs `unsafe`: pyo3 has no safe wrapper for
//! `PyConfig`. What it guarantees: an isolated interpreter (no `PYTHON*` variables, no user
//! site-packages, no `site` import, no bytecode written) whose string hash seed is fixed at
//! 0, so iterating a `set` of strings gives the same order in every worker whatever
//! `PYTHONHASHSEED` the caller had.
#![allow(unsafe_code)]

use std::ffi::CStr;

use pyo3::ffi;

/// Initialises the interpreter once for this process.
pub(crate) fn initialize() -> Result<(), String> {
    // SAFETY: called once, on the main thread, before any other Python API use. The
    // config struct is initialised by CPython itself before we set plain integer fields,
    // and cleared after use on every path.
    unsafe {
        if ffi::Py_IsInitialized() != 0 {
            return Ok(());
        }
        let mut config = std::mem::MaybeUninit::<ffi::PyConfig>::zeroed();
        ffi::PyConfig_InitIsolatedConfig(config.as_mut_ptr());
        let mut config = config.assume_init();
        config.use_hash_seed = 1;
        config.hash_seed = 0;
        config.site_import = 0;
        config.write_bytecode = 0;
        config.install_signal_handlers = 0;
        config.user_site_directory = 0;
        config.use_environment = 0;
        config.parse_argv = 0;
        let status = ffi::Py_InitializeFromConfig(&config);
        ffi::PyConfig_Clear(&mut config);
        if ffi::PyStatus_Exception(status) != 0 {
            let message = if status.err_msg.is_null() {
                "unknown error".to_string()
            } else {
                CStr::from_ptr(status.err_msg)
                    .to_string_lossy()
                    .into_owned()
            };
            return Err(format!(
                "cannot start the embedded Python interpreter: {message}"
            ));
        }
        // pyo3 expects the thread that initialised Python not to hold the GIL afterwards.
        ffi::PyEval_SaveThread();
    }
    Ok(())
}
