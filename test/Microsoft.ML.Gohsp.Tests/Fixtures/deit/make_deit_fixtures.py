# Regenerates the distilled-DeiT fixtures (the tests only read the files; they never need Python).
#   /usr/bin/python3 make_deit_fixtures.py        (Debian's python3-torch 1.13)
# A tiny distilled DeiT (16x16 input, patch 4, width 32, 2 blocks, 2 heads, MLP 64, 5 classes; class token, distillation
# token, 16 + 2 positions, two heads) with random weights, saved with the real key names and shapes of
#   timm/  timm's VisionTransformerDistilled (deit_*_distilled_*): dist_token, head_dist.*, model.safetensors + the hub's
#          config.json (architecture, num_classes, pretrained_cfg.mean/std, label_names);
#   hf/    Hugging Face DeiTForImageClassificationWithTeacher: deit.embeddings.distillation_token, cls_classifier.*,
#          distillation_classifier.*, q/k/v split, model.safetensors + config.json (num_attention_heads, layer_norm_eps, id2label);
#   hf-cls/ Hugging Face DeiTForImageClassification (distillation token in the sequence, one classifier on the class token),
#          pytorch_model.bin (torch.save) + config.json.
# expected.json holds an input and the logits of this file's reference forward: timm's / Hugging Face's DeiT maths written
# out below, eval mode: (head(x[:, 0]) + head_dist(x[:, 1])) / 2 for the distilled model, classifier(x[:, 0]) for hf-cls.
import json, os, struct
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(4321)
D, DEPTH, HEADS, MLP, CLASSES, IMG, PATCH = 32, 2, 2, 64, 5, 16, 4
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
        return self.proj((attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, N, C))

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

class DistilledDeiT(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch_embed = PatchEmbed()
        self.cls_token = nn.Parameter(torch.randn(1, 1, D) * 0.2)
        self.dist_token = nn.Parameter(torch.randn(1, 1, D) * 0.2)
        self.pos_embed = nn.Parameter(torch.randn(1, (IMG // PATCH) ** 2 + 2, D) * 0.2)
        self.blocks = nn.ModuleList([Block() for _ in range(DEPTH)])
        self.norm = nn.LayerNorm(D, eps=EPS)
        self.head = nn.Linear(D, CLASSES)
        self.head_dist = nn.Linear(D, CLASSES)
    def features(self, x):
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        B = x.shape[0]
        x = torch.cat([self.cls_token.expand(B, -1, -1), self.dist_token.expand(B, -1, -1), x], dim=1) + self.pos_embed
        for b in self.blocks:
            x = b(x)
        return self.norm(x)
    def forward(self, x):  # eval: DeiT averages the two heads
        x = self.features(x)
        return (self.head(x[:, 0]) + self.head_dist(x[:, 1])) / 2
    def forward_cls_only(self, x):  # DeiTForImageClassification: one classifier on the class token (here: head)
        return self.head(self.features(x)[:, 0])

model = DistilledDeiT().eval()
with torch.no_grad():  # non-trivial norms and biases, and two different heads, so a mapping mistake cannot hide
    for name, p in model.named_parameters():
        if name.endswith("bias") or "norm" in name:
            p.add_(torch.randn_like(p) * 0.1)
    model.head_dist.weight.mul_(-1.5)

here = os.path.dirname(os.path.abspath(__file__))
for d in ("timm", "hf", "hf-cls"):
    os.makedirs(os.path.join(here, d), exist_ok=True)
sd = {k: v.clone().contiguous() for k, v in model.state_dict().items()}

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

save_safetensors(sd, os.path.join(here, "timm", "model.safetensors"))
labels = [f"class_{i}" for i in range(CLASSES)]
with open(os.path.join(here, "timm", "config.json"), "w") as f:
    json.dump({"architecture": "deit_tiny_distilled_patch16_224", "num_classes": CLASSES, "num_features": D,
               "global_pool": "token", "label_names": labels,
               "pretrained_cfg": {"tag": "fb_in1k", "input_size": [3, IMG, IMG], "mean": [0.485, 0.456, 0.406],
                                  "std": [0.229, 0.224, 0.225], "num_classes": CLASSES}}, f, indent=1)

def hf_state_dict(with_teacher):
    hf = {}
    def put(k, t): hf[k] = t.clone().contiguous()
    put("deit.embeddings.cls_token", sd["cls_token"])
    put("deit.embeddings.distillation_token", sd["dist_token"])
    put("deit.embeddings.position_embeddings", sd["pos_embed"])
    put("deit.embeddings.patch_embeddings.projection.weight", sd["patch_embed.proj.weight"])
    put("deit.embeddings.patch_embeddings.projection.bias", sd["patch_embed.proj.bias"])
    for i in range(DEPTH):
        p, o = f"blocks.{i}.", f"deit.encoder.layer.{i}."
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
        put("deit.layernorm." + s, sd["norm." + s])
        if with_teacher:
            put("cls_classifier." + s, sd["head." + s])
            put("distillation_classifier." + s, sd["head_dist." + s])
        else:
            put("classifier." + s, sd["head." + s])
    return hf

def hf_config(arch):
    return {"architectures": [arch], "model_type": "deit", "hidden_size": D, "num_hidden_layers": DEPTH,
            "num_attention_heads": HEADS, "intermediate_size": MLP, "hidden_act": "gelu", "layer_norm_eps": EPS,
            "image_size": IMG, "patch_size": PATCH, "num_channels": 3, "qkv_bias": True,
            "id2label": {str(i): labels[i] for i in range(CLASSES)}, "label2id": {labels[i]: i for i in range(CLASSES)}}

save_safetensors(hf_state_dict(True), os.path.join(here, "hf", "model.safetensors"))
with open(os.path.join(here, "hf", "config.json"), "w") as f:
    json.dump(hf_config("DeiTForImageClassificationWithTeacher"), f, indent=1)
torch.save(hf_state_dict(False), os.path.join(here, "hf-cls", "pytorch_model.bin"))
with open(os.path.join(here, "hf-cls", "config.json"), "w") as f:
    json.dump(hf_config("DeiTForImageClassification"), f, indent=1)

x = torch.randn(2, 3, IMG, IMG)
with torch.no_grad():
    logits = model(x)
    cls_only = model.forward_cls_only(x)
with open(os.path.join(here, "expected.json"), "w") as f:
    json.dump({"torch": torch.__version__, "input_shape": list(x.shape), "input": x.flatten().tolist(),
               "logits": logits.flatten().tolist(), "logits_cls_only": cls_only.flatten().tolist()}, f)
print("logits", logits)
