//! What the crate's HTTP clients (the forge client, MCP over streamable HTTP) share.

/// rustls' `ring` provider as the process default, once (reqwest is built without one). An
/// error means another part of the process installed a provider first; that one is used.
pub(crate) fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
