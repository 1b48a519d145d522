"""The PyTorch peer of the scorer: a random Hugging Face T5 v1.1 and t-zero's scoring protocol.

t-zero's run_eval: inputs tokenized WITHOUT special tokens (no EOS), each answer choice
tokenized WITH them (EOS appended), the model run with `labels=choice`, and the choice's score
the sum over its tokens of log_softmax(logits) gathered at the labels. Here the input is copied
per choice exactly as the peer does (no encode-once trick), one example at a time.
"""
from __future__ import annotations

import pathlib
import shutil

import numpy as np
import sentencepiece as spm
import torch
import transformers

from bench.hf_peers import randomize_untied_t5

VOCAB_SIZE = 1024  # covers the 800-piece test SentencePiece model (+ its 100 extra ids)


def save_random_t5(out_dir, spm_model_path, seed: int = 0) -> pathlib.Path:
    """Write a random gated-GELU, untied T5 (every weight random) + spiece.model to `out_dir`."""
    config = transformers.T5Config(
        vocab_size=VOCAB_SIZE, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
        num_heads=4, relative_attention_num_buckets=32, relative_attention_max_distance=128,
        dropout_rate=0.0, layer_norm_epsilon=1e-6, feed_forward_proj="gated-gelu",
        tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(seed)
    model = transformers.T5ForConditionalGeneration(config).eval()
    randomize_untied_t5(model, seed)
    out = pathlib.Path(out_dir)
    model.save_pretrained(out)
    shutil.copyfile(spm_model_path, out / "spiece.model")
    return out


class TZeroPeer:
    """Per-choice log-likelihoods the way t-zero computes them (fp32, PyTorch)."""

    def __init__(self, hf_dir):
        torch.set_num_threads(1)  # tiny matmuls: threads only contend on a shared CI machine
        self.model = transformers.T5ForConditionalGeneration.from_pretrained(
            hf_dir, dtype=torch.float32).eval()
        self.sp = spm.SentencePieceProcessor(model_file=str(pathlib.Path(hf_dir) / "spiece.model"))

    def choice_log_likelihoods(self, input_text: str, choices: list[str]) -> np.ndarray:
        input_ids = torch.tensor([self.sp.encode(input_text)])  # no EOS
        out = []
        with torch.no_grad():
            for choice in choices:
                labels = torch.tensor([self.sp.encode(choice) + [1]])  # + EOS
                logits = self.model(input_ids=input_ids, labels=labels).logits  # [1, Lt, V]
                log_probs = torch.log_softmax(logits.float(), dim=-1)
                out.append(log_probs.gather(-1, labels[..., None]).sum().item())
        return np.asarray(out, np.float64)


class LmEvalSeq2SeqPeer:
    """Per-choice log-likelihoods the way lm-evaluation-harness scores a zero-shot
    multiple-choice request on a Hugging Face encoder-decoder (read at commit 4e7e0d4):
    `lm_eval/api/task.py` ConfigurableTask.construct_requests makes (context, " " + choice);
    `lm_eval/api/model.py` TemplateLM._encode_pair moves the context's trailing whitespace to
    the continuation and, for seq2seq, encodes the context with the tokenizer's default special
    tokens (T5: EOS appended) and the continuation with add_special_tokens=False;
    `lm_eval/models/huggingface.py` HFLM._loglikelihood_tokens runs
    model(input_ids, attention_mask, labels=continuation) and sums log_softmax at the
    continuation tokens. Tokenizer: transformers' AutoTokenizer, as HFLM loads it."""

    def __init__(self, hf_dir, model=None):
        torch.set_num_threads(1)
        self.model = model or transformers.T5ForConditionalGeneration.from_pretrained(
            hf_dir, dtype=torch.float32).eval()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(hf_dir))

    def choice_log_likelihoods(self, context: str, choices: list[str]):
        """(log-likelihoods, continuation token counts), one per choice."""
        scores, lengths = [], []
        for choice in choices:
            ctx, cont = context, " " + choice
            n_spaces = len(ctx) - len(ctx.rstrip())
            if n_spaces > 0:
                cont, ctx = ctx[-n_spaces:] + cont, ctx[:-n_spaces]
            inputs = torch.tensor([self.tokenizer.encode(ctx)])
            labels = torch.tensor([self.tokenizer.encode(cont, add_special_tokens=False)])
            with torch.no_grad():
                logits = self.model(input_ids=inputs, attention_mask=torch.ones_like(inputs),
                                    labels=labels).logits  # [1, Lt, V]
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            scores.append(log_probs.gather(-1, labels[..., None]).sum().item())
            lengths.append(labels.shape[1])
        return np.asarray(scores, np.float64), lengths
