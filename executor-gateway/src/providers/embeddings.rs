//! OpenAI-compatible embeddings (`POST {base_url}/embeddings`, which OpenAI and vLLM serve):
//! what RAG collections that name an embedding model call at index and query time. The same
//! plumbing as chat calls (credential from the spec's `api_key_env`, sensitive header, typed
//! errors that never quote the key).

use serde_json::{Value, json};

use super::{HttpModel, PreparedCall, ProviderError, headers};
use runledger_contracts::model::{ModelSpec, ProviderKind};

/// An embedding model from the registry.
#[derive(Debug, Clone)]
pub struct Embeddings {
    http: HttpModel,
}

impl Embeddings {
    /// Refuses a model whose provider does not speak `/v1/embeddings`.
    pub fn new(spec: ModelSpec) -> Result<Self, ProviderError> {
        if spec.provider != ProviderKind::OpenaiCompatible {
            return Err(ProviderError::Client {
                model: spec.name.clone(),
                reason: format!(
                    "provider `{}` has no embeddings endpoint; use an openai_compatible model",
                    spec.provider.as_str()
                ),
            });
        }
        Ok(Self {
            http: HttpModel::new(spec)?,
        })
    }

    pub fn model(&self) -> &str {
        &self.http.spec.name
    }

    /// One vector per input, in input order.
    pub async fn embed(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let credential = self.http.credential()?;
        let auth = credential
            .as_ref()
            .map(|c| c.header("authorization", "Bearer ", &self.http.spec.name))
            .transpose()?;
        let call = PreparedCall {
            url: format!("{}/embeddings", self.http.spec.effective_base_url()),
            headers: headers(auth, &[]),
            body: json!({ "model": self.http.spec.model_id, "input": inputs }),
        };
        let body = self.http.send(call, credential.as_ref(), None).await?;
        self.vectors(&body, inputs.len())
    }

    /// Reads `data[].embedding` (ordered by `data[].index`) from a response body.
    fn vectors(&self, body: &Value, expected: usize) -> Result<Vec<Vec<f32>>, ProviderError> {
        let data = body
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| self.http.bad_response("no data array"))?;
        let mut out: Vec<Option<Vec<f32>>> = vec![None; expected];
        for (position, item) in data.iter().enumerate() {
            let index = item
                .get("index")
                .and_then(Value::as_u64)
                .and_then(|i| usize::try_from(i).ok())
                .unwrap_or(position);
            let vector = item
                .get("embedding")
                .and_then(Value::as_array)
                .ok_or_else(|| self.http.bad_response("data[].embedding is not an array"))?
                .iter()
                .map(|x| x.as_f64().map(|f| f as f32))
                .collect::<Option<Vec<f32>>>()
                .ok_or_else(|| {
                    self.http
                        .bad_response("data[].embedding holds a non-number")
                })?;
            match out.get_mut(index) {
                Some(slot) => *slot = Some(vector),
                None => return Err(self.http.bad_response("data[].index out of range")),
            }
        }
        out.into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| self.http.bad_response("fewer embeddings than inputs"))
    }
}
