//! Sampled decoding on the device: [`LanguageModel::step_sampled`] for [`GpuModel`].
//!
//! The step runs as usual, then `clkernels`' sampling kernel applies the whole chain to the logits where they are
//! and only the chosen id is read back. Where the kernel cannot decide (a NaN or infinite logit, too many equal
//! logits at a cut) the logits are read back instead, and the generator samples them on the host with the same
//! uniform number, which also reports bad logits the way the host sampler does.

use clkernels::kernels::sampling::{DrawParams, DrawScratch, Uniform, NO_TOKEN};
use clkernels::runtime::DeviceKind;

use super::GpuModel;
use crate::generate::{DrawRequest, LanguageModel, StepOutput, Want};
use crate::EngineError;

/// Where [`GpuModel`] chooses a sampled (not plain greedy) token. A model starts with the site the environment
/// variable `TLITE_SAMPLING` names (`device`, `host` or `auto`), for comparing the two from the command line, and
/// with `Auto` without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SamplingSite {
    /// On the device, unless the OpenCL device is the CPU itself (PoCL): there the logits are already in host
    /// memory, and the host sampler was faster than the kernel (`cargo bench -p bench --bench sampling`).
    #[default]
    Auto,
    /// On the device, reading back one id.
    Device,
    /// On the host, reading back the logits.
    Host,
}

/// The model's sampling site and the device buffers of its sampling stream (made by the first sampled step).
#[derive(Debug)]
pub(super) struct DrawState {
    site: SamplingSite,
    scratch: Option<DrawScratch>,
}

impl DrawState {
    /// The site `TLITE_SAMPLING` names, else `Auto`.
    pub(super) fn from_env() -> Self {
        let site = match std::env::var("TLITE_SAMPLING").as_deref() {
            Ok("device") => SamplingSite::Device,
            Ok("host") => SamplingSite::Host,
            Ok("auto") | Err(_) => SamplingSite::Auto,
            Ok(other) => {
                tracing::warn!(
                    value = other,
                    "TLITE_SAMPLING is not device, host or auto; using auto"
                );
                SamplingSite::Auto
            }
        };
        DrawState {
            site,
            scratch: None,
        }
    }
}

impl GpuModel {
    /// Chooses where sampled tokens are drawn from now on. The token a seed gives is the same either way, but
    /// where float rounding puts a draw on the boundary between two tokens.
    pub fn set_sampling_site(&mut self, site: SamplingSite) {
        self.draw.site = site;
    }

    /// Whether sampled tokens are drawn on the device.
    pub fn samples_on_device(&self) -> bool {
        match self.draw.site {
            SamplingSite::Auto => self.gpu.caps().kind != DeviceKind::Cpu,
            SamplingSite::Device => true,
            SamplingSite::Host => false,
        }
    }
}

/// Runs `tokens` and draws the next token on the device as `draw` says (or hands the logits back when the host
/// samples).
pub(super) fn step_sampled(
    model: &mut GpuModel,
    tokens: &[u32],
    draw: &DrawRequest<'_>,
) -> Result<StepOutput, EngineError> {
    if !model.samples_on_device() {
        return model.step(tokens, Want::Logits);
    }
    let p = draw.params;
    let params = DrawParams::new(p.temperature, p.top_k, p.top_p, p.min_p, p.repeat_penalty)?;
    let uniform = Uniform::new(draw.uniform.unwrap_or(0.0))?;
    let mut scratch = match model.draw.scratch.take() {
        Some(s) => s,
        None => DrawScratch::new(&model.gpu, draw.penalised.len())?,
    };
    // The penalised tokens go up first: the write blocks, and the queue is idle before the step is enqueued.
    scratch.set_penalised(&model.gpu, draw.penalised)?;
    // The step's own evaluation of the plan serves the head over its last position.
    let dims = model.run_layers(tokens)?;
    model.enqueue_logits(&dims)?;
    let b = &mut model.buffers;
    let (chosen, head) = (
        &mut b.chosen,
        b.layers
            .last_mut()
            .ok_or_else(|| EngineError::InvalidConfig("the model has no layers".into()))?,
    );
    let drawn = model.kernels.sampling.draw(
        &mut head.logits,
        dims.vocab,
        &params,
        uniform,
        &mut scratch,
        chosen,
    );
    model.draw.scratch = Some(scratch);
    drawn?;
    let token = chosen.read(&model.gpu)?[0];
    if token == NO_TOKEN {
        return Ok(StepOutput::Logits(head.logits.read(&model.gpu)?));
    }
    // Like a greedy step's arg-max, the choice stays on the device as the next step's input.
    model.device_choice = Some(token);
    Ok(StepOutput::Token(token))
}
