"""SAEs as their projects save them: `load_sae(path)` reads one, `load_saes(path)` a folder of them, into one
`SAE` (encoder.py) that encodes activations as the project does. Only the encoder and the decoder rows are
needed to capture, so none of these projects is a dependency. The layout is told by the files present:

SAELens (jbloomAus/SAELens; saelens.py): `cfg.json` + `sae_weights.safetensors`, cfg v5 or v6.
    standard  relu((x - b_dec) @ W_enc + b_enc)              (b_dec subtracted when apply_b_dec_to_input)
    topk      the k largest of that, relu'd; others 0       (pre-activations times ||W_dec[i]|| when
              rescale_acts_by_decoder_norm)
    jumprelu  relu(pre) * (pre > threshold)
    batchtopk as jumprelu with the one trained topk_threshold (how SAELens saves it for inference)
    gated     (x' @ W_enc + b_gate > 0) * relu(x' @ (W_enc * exp(r_mag)) + b_mag), x' = x - b_dec
    transcoder / skip_transcoder / jumprelu_transcoder: relu / jumprelu of x @ W_enc + b_enc (no b_dec
              subtracted); W_dec [d_sae, d_out] writes at `hook_name_out`
    normalize_activations constant_norm_rescale (x * sqrt(d_in) / |x|) and layer_norm first, when set.
EleutherAI sparsify (delphi's own; sparsify.py): a folder per hookpoint, named as it, holding `cfg.json` +
    `sae.safetensors` (encoder.weight [num_latents, d_in], encoder.bias, W_dec [num_latents, d_in], b_dec,
    optional W_skip). topk: the k largest of relu(encoder(x - b_dec)); groupmax: the largest in each of k
    groups; transcoders (`transcode`) do not subtract b_dec. A folder of hookpoint folders: load_saes.
Gemma Scope (google/gemma-scope-*; gemmascope.py): `params.npz` (W_enc [d_model, d_sae], W_dec [d_sae, d_model],
    b_enc, b_dec, threshold). relu(pre) * (pre > threshold), pre = x @ W_enc + b_enc (no b_dec subtracted).
dictionary_learning (saprmarks/dictionary_learning; dictionary_learning.py): `ae.pt` (a state dict) +
    `config.json` naming `trainer.dict_class`. AutoEncoder relu(encoder(x - bias)); AutoEncoderNew
    relu(encoder(x)); GatedAutoEncoder as gated above with x' = x - decoder_bias; AutoEncoderTopK the k largest
    of relu(encoder(x - b_dec)); BatchTopKSAE and MatryoshkaBatchTopKSAE relu(encoder(x - b_dec)) where above
    the scalar threshold; JumpReluAutoEncoder relu(pre * (pre > threshold)), pre = x @ W_enc + b_enc.
    Weights are read as saved: no renormalisation of decoder columns (AutoEncoder.from_pretrained does that
    by default, rescaling activations by the columns' norms).

Every SAE says where it came from (`format`, `name`, `source`: the path load_sae reloads it from, `cfg`:
its own config plus format / architecture / k, `fingerprint`: sha256 of its files) and what it reads and
writes (`hook_name`, verbatim from its files, None for Gemma Scope; `out_hook` for transcoders; `W_dec`
[d_sae, d_out]: the output directions). A file that is not what its layout says is one CaptureError line
naming the file and what was expected.
"""

from .encoder import ARCHITECTURES, FORMATS, SAE, Spec
from .load import layout, load_sae, load_saes

__all__ = ["ARCHITECTURES", "FORMATS", "SAE", "Spec", "layout", "load_sae", "load_saes"]
