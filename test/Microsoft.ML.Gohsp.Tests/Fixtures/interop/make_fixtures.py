# Regenerates the PyTorch-made interop fixtures (the tests only read the files; they never need Python).
#   /usr/bin/python3 make_fixtures.py        (Debian's python3-torch 1.13 was used; any PyTorch >= 1.6 writes the same zip format)
# A tiny timm-structured ViT (16x16 input, patch 4, width 48, 2 blocks, 3 heads, MLP 96, 5 classes) with random weights
# is saved with torch.save as a timm state dict (pickle protocol 2, PyTorch's default, and protocol 4), as a Hugging Face
# ViTForImageClassification state dict (pytorch_model.bin) and as a safetensors file written to the format's spec
# (header with __metadata__, padded to 8 bytes); shared_storage.pth holds two views of one storage. expected.json holds an input, the logits of this file's reference
# forward (timm's ViT maths, written out below) and timm's resample_abs_pos_embed of the position embedding to 6x6.
import json, math, os, struct
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(1234)
D, DEPTH, HEADS, MLP, CLASSES, IMG, PATCH = 48, 2, 3, 96, 5, 16, 4
EPS = 1e-6

class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(D, 3 * D)
        self.proj = nn.Linear(D, D)
    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, HEADS, C // HEADS).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q @ k.transpose(-2, -1)) * (C // HEADS) ** -0.5
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)

class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(D, MLP)
        self.fc2 = nn.Linear(MLP, D)
    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1 = nn.LayerNorm(D, eps=EPS)
        self.attn = Attention()
        self.norm2 = nn.LayerNorm(D, eps=EPS)
        self.mlp = Mlp()
    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

class PatchEmbed(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, D, PATCH, PATCH)

class ViT(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch_embed = PatchEmbed()
        self.cls_token = nn.Parameter(torch.randn(1, 1, D) * 0.2)
        self.pos_embed = nn.Parameter(torch.randn(1, (IMG // PATCH) ** 2 + 1, D) * 0.2)
        self.blocks = nn.ModuleList([Block() for _ in range(DEPTH)])
        self.norm = nn.LayerNorm(D, eps=EPS)
        self.head = nn.Linear(D, CLASSES)
    def forward(self, x):
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x)[:, 0])

model = ViT().eval()
with torch.no_grad():  # non-trivial norms and biases, so a mapping mistake cannot hide
    for name, p in model.named_parameters():
        if name.endswith("bias") or "norm" in name:
            p.add_(torch.randn_like(p) * 0.1)

here = os.path.dirname(os.path.abspath(__file__))
os.makedirs(os.path.join(here, "timm"), exist_ok=True)
os.makedirs(os.path.join(here, "hf"), exist_ok=True)
sd = model.state_dict()
torch.save(sd, os.path.join(here, "timm", "tiny_vit.pth"))
torch.save(sd, os.path.join(here, "timm", "tiny_vit_protocol4.pth"), pickle_protocol=4)

hf = {}
def put(k, t): hf[k] = t.clone().contiguous()
put("vit.embeddings.cls_token", sd["cls_token"])
put("vit.embeddings.position_embeddings", sd["pos_embed"])
put("vit.embeddings.patch_embeddings.projection.weight", sd["patch_embed.proj.weight"])
put("vit.embeddings.patch_embeddings.projection.bias", sd["patch_embed.proj.bias"])
for i in range(DEPTH):
    p, o = f"blocks.{i}.", f"vit.encoder.layer.{i}."
    for s in ("weight", "bias"):
        q, k, v = sd[p + "attn.qkv." + s].chunk(3, dim=0)
        put(o + "attention.attention.query." + s, q)
        put(o + "attention.attention.key." + s, k)
        put(o + "attention.attention.value." + s, v)
        put(o + "attention.output.dense." + s, sd[p + "attn.proj." + s])
        put(o + "layernorm_before." + s, sd[p + "norm1." + s])
        put(o + "layernorm_after." + s, sd[p + "norm2." + s])
        put(o + "intermediate.dense." + s, sd[p + "mlp.fc1." + s])
        put(o + "output.dense." + s, sd[p + "mlp.fc2." + s])
for s in ("weight", "bias"):
    put("vit.layernorm." + s, sd["norm." + s])
    put("classifier." + s, sd["head." + s])
torch.save(hf, os.path.join(here, "hf", "pytorch_model.bin"))

def save_safetensors(tensors, path):
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for k in sorted(tensors):
        b = tensors[k].numpy().astype("<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(tensors[k].shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b); offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h))); f.write(h)
        for b in blobs: f.write(b)
save_safetensors(hf, os.path.join(here, "hf", "model.safetensors"))

with open(os.path.join(here, "hf", "config.json"), "w") as f:
    json.dump({"architectures": ["ViTForImageClassification"], "model_type": "vit", "hidden_size": D, "num_hidden_layers": DEPTH,
               "num_attention_heads": HEADS, "intermediate_size": MLP, "hidden_act": "gelu", "layer_norm_eps": EPS,
               "image_size": IMG, "patch_size": PATCH, "num_channels": 3, "qkv_bias": True,
               "id2label": {str(i): f"class_{i}" for i in range(CLASSES)}}, f, indent=1)
with open(os.path.join(here, "hf", "preprocessor_config.json"), "w") as f:
    json.dump({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "rescale_factor": 1 / 255}, f, indent=1)

# two tensors that are views into one storage (the second at a storage offset), as torch.save writes them
fused = torch.randn(6, 4)
torch.save({"first": fused[:3], "second": fused[3:]}, os.path.join(here, "shared_storage.pth"))

x = torch.randn(2, 3, IMG, IMG)
with torch.no_grad():
    logits = model(x)
    g = IMG // PATCH
    grid = sd["pos_embed"][:, 1:].reshape(1, g, g, D).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(6, 6), mode="bicubic", antialias=True, align_corners=False)
    pos6 = torch.cat([sd["pos_embed"][:, :1], resized.permute(0, 2, 3, 1).reshape(1, 36, D)], dim=1)
with open(os.path.join(here, "expected.json"), "w") as f:
    json.dump({"torch": torch.__version__, "input_shape": list(x.shape), "input": x.flatten().tolist(),
               "logits": logits.flatten().tolist(), "pos_embed_6x6": pos6.flatten().tolist()}, f)
print("logits", logits)
