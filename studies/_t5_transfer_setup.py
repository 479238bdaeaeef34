"""The t5_transfer study's first step (python studies/_t5_transfer_setup.py FOLDER): Multi30k's
joint BPE of 8,000 (the t5-multi30k runs' vocabulary, made in $PREP_DIR if absent) copied to
FOLDER/tokenizer.json for `data.py lm --tokenizer`, and the random-init start: T5's own init at
t5-multi30k's shape and the pretraining's vocabulary (8,000 + 100 sentinels) as an HF folder,
FOLDER/random, so that both fine-tuning starts go through the same --init-from path."""

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository's modules

import torch  # noqa: E402

import data  # noqa: E402
import t5  # noqa: E402

folder = Path(sys.argv[1])
tok = data.translation_tokenizer("multi30k", "de", "en", 8000, "bpe")
folder.mkdir(parents=True, exist_ok=True)
tok.save(str(folder / "tokenizer.json"))
ids = dict(pad_token_id=tok.token_to_id(data.PAD), eos_token_id=tok.token_to_id(data.EOS))
torch.manual_seed(1337)
config = t5.T5Config.from_preset("t5-multi30k", vocab_size=tok.get_vocab_size() + 100, **ids)
config.decoder_start_token_id = ids["pad_token_id"]
shutil.rmtree(folder / "random", ignore_errors=True)
t5.T5ForConditionalGeneration(config).save_pretrained(folder / "random")
tok.save(str(folder / "random" / "tokenizer.json"))
print(f"{folder}: tokenizer.json ({tok.get_vocab_size()} tokens), random/ ({config.vocab_size} ids)")
