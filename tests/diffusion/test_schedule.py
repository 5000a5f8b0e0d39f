import dataclasses

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from hoi.config import load_config
from hoi.diffusion.schedule import Schedule, step


@pytest.fixture(scope="module")
def schedule() -> Schedule:
    return Schedule(load_config(flavour="svimo-tiny").diffusion)


def abar(schedule: Schedule, t: int) -> float:
    """abar_t, with abar_{-1} = 1 (the step past the last one lands on x0)."""
    return 1.0 if t < 0 else float(schedule.alphas_cumprod[t])


# --- the table -----------------------------------------------------------------------------


def test_the_tables_are_copied_to_a_device_once():
    """A training step indexes the tables on the data's device: one copy there, kept (the
    meta device stands in for a GPU; on the CPU every copy would be free)."""
    schedule = Schedule(load_config(flavour="svimo-tiny").diffusion)
    x0 = torch.empty(2, 3, device="meta")
    t = torch.tensor([1, 999], device="meta")
    for _ in range(3):
        x_t = schedule.add_noise(x0, x0, t)
        schedule.x0_from_v(x0, x_t, t)
    assert x_t.device.type == "meta"
    assert sorted(device.type for _, device in schedule._on_device) == ["meta", "meta"]


def test_cogvideox_table_has_zero_terminal_snr(schedule):
    a = schedule.alphas_cumprod
    assert a.shape == (1000,)
    # Zero-SNR rescaling keeps abar_0 = 1 - beta_start and pins abar_{T-1} to 0.
    assert abs(float(a[0]) - (1 - 0.00085)) < 1e-6
    assert float(a[-1]) < 1e-10
    assert bool((a[1:] < a[:-1]).all())
    plain = Schedule(dataclasses.replace(schedule.cfg, zero_terminal_snr=False))
    assert float(plain.alphas_cumprod[-1]) > 1e-3  # without rescaling some signal survives


def test_sample_timesteps_are_uniform_integers_and_reproducible(schedule):
    t = schedule.sample_timesteps(20000, torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.shape == (20000,)
    assert int(t.min()) >= 0 and int(t.max()) == 999
    assert abs(t.double().mean().item() - 499.5) < 10  # std of the mean is about 2
    again = schedule.sample_timesteps(20000, torch.Generator().manual_seed(0))
    assert torch.equal(t, again)


# --- forward process and parameterisations -------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 3, 16, 4, 6), (3, 9, 340, 3)])
def test_add_noise_is_equation_1_per_sample(schedule, shape):
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(shape, generator=g, dtype=torch.float64)
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 500, 999])
    x_t = schedule.add_noise(x0, eps, t)
    for i, ti in enumerate(t.tolist()):
        a = abar(schedule, ti)
        torch.testing.assert_close(x_t[i], a ** 0.5 * x0[i] + (1 - a) ** 0.5 * eps[i])
    assert torch.equal(x_t[2], eps[2])  # zero terminal SNR: pure noise at T - 1


def test_add_noise_matches_diffusers_in_float32(schedule):
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    t = torch.tensor([3, 250, 700, 998])
    reference = DDPMScheduler(**schedule._scheduler_kwargs()).add_noise(x0, eps, t)
    torch.testing.assert_close(schedule.add_noise(x0, eps, t), reference)


def test_x0_from_v_inverts_v_target_and_add_noise_including_zero_snr(schedule):
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(4, 9, 340, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(4, 9, 340, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 640, 999])
    x_t, v = schedule.add_noise(x0, eps, t), schedule.v_target(x0, eps, t)
    recovered = schedule.x0_from_v(v, x_t, t)
    assert torch.isfinite(recovered).all()
    torch.testing.assert_close(recovered, x0, rtol=0, atol=1e-12)
    torch.testing.assert_close(v[3], -x0[3])  # at abar = 0, v = -x0
    torch.testing.assert_close(schedule.x0_from(v, x_t, t, "v"), recovered)
    assert schedule.x0_from(x0, x_t, t, "x0") is x0
    with pytest.raises(ValueError, match="parameterisation"):
        schedule.x0_from(v, x_t, t, "eps")


def test_a_scalar_timestep_applies_to_the_whole_batch(schedule):
    x0, eps = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    torch.testing.assert_close(schedule.add_noise(x0, eps, 400),
                               schedule.add_noise(x0, eps, torch.tensor([400, 400])))


# --- sampling schedulers -------------------------------------------------------------------


def test_sampling_schedulers_share_the_betas_and_use_trailing_spacing(schedule):
    for kind, cls in (("ddpm", DDPMScheduler), ("ddim", DDIMScheduler)):
        s = schedule.sampling_scheduler(kind, 50)
        assert isinstance(s, cls)
        assert s.config.prediction_type == "sample" and not s.config.clip_sample
        torch.testing.assert_close(s.alphas_cumprod.double(), schedule.alphas_cumprod)
        assert s.timesteps.tolist() == list(range(999, 0, -20))  # trailing: starts at T - 1
    assert isinstance(schedule.sampling_scheduler(), DDIMScheduler)  # cfg.sampler default
    assert len(schedule.sampling_scheduler().timesteps) == schedule.cfg.num_inference_steps


@pytest.mark.parametrize("index", [0, 4, 9])  # t = 999 (zero SNR), 599, 99 (last step)
def test_ddpm_step_is_equation_3(schedule, index):
    s = schedule.sampling_scheduler("ddpm", 10)
    t = int(s.timesteps[index])
    prev = int(s.timesteps[index + 1]) if index + 1 < 10 else -1
    g = torch.Generator().manual_seed(4)
    x_t, x0_hat = torch.randn(2, 64, generator=g), torch.randn(2, 64, generator=g)
    # Equation 3 over a stride: alpha_t becomes abar_t / abar_prev.
    a_t, a_prev = abar(schedule, t), abar(schedule, prev)
    alpha = a_t / a_prev
    mean = ((alpha ** 0.5 * (1 - a_prev) * x_t + a_prev ** 0.5 * (1 - alpha) * x0_hat)
            / (1 - a_t))
    variance = (1 - a_prev) / (1 - a_t) * (1 - alpha)
    x_prev = step(s, x0_hat, s.timesteps[index], x_t, torch.Generator().manual_seed(5))
    noise = torch.randn(2, 64, generator=torch.Generator().manual_seed(5))
    expected = mean + max(variance, 1e-20) ** 0.5 * noise  # diffusers floors the variance
    torch.testing.assert_close(x_prev, expected, rtol=1e-5, atol=1e-5)


def test_ddpm_step_noise_has_the_posterior_variance(schedule):
    s = schedule.sampling_scheduler("ddpm", 10)
    t, prev = int(s.timesteps[3]), int(s.timesteps[4])
    x_t, x0_hat = torch.full((1, 40000), 0.3), torch.full((1, 40000), -0.7)
    x_prev = step(s, x0_hat, t, x_t, torch.Generator().manual_seed(6))
    a_t, a_prev = abar(schedule, t), abar(schedule, prev)
    alpha = a_t / a_prev
    mean = (alpha ** 0.5 * (1 - a_prev) * 0.3 - a_prev ** 0.5 * (1 - alpha) * 0.7) / (1 - a_t)
    variance = (1 - a_prev) / (1 - a_t) * (1 - alpha)
    assert abs(x_prev.mean().item() - mean) < 4 * (variance / 40000) ** 0.5
    assert abs(x_prev.var().item() / variance - 1) < 0.03  # relative std about 0.007


@pytest.mark.parametrize("index", [0, 2, 4])  # t = 999 (zero SNR), 599, 199 (last step)
def test_ddim_step_is_the_deterministic_ddim_update(schedule, index):
    s = schedule.sampling_scheduler("ddim", 5)
    t = int(s.timesteps[index])
    prev = t - 200
    g = torch.Generator().manual_seed(7)
    x_t, x0_hat = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    a_t, a_prev = abar(schedule, t), abar(schedule, prev)
    eps_hat = (x_t - a_t ** 0.5 * x0_hat) / (1 - a_t) ** 0.5
    expected = a_prev ** 0.5 * x0_hat + (1 - a_prev) ** 0.5 * eps_hat
    x_prev = step(s, x0_hat, t, x_t)
    torch.testing.assert_close(x_prev, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(step(s, x0_hat, t, x_t), x_prev, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["ddim", "ddpm"])
def test_one_scheduler_steps_latents_and_motion_together_and_an_oracle_reaches_x0(schedule,
                                                                                  kind):
    """Algorithm 2's loop with a perfect x0 predictor for a latent and a 3D motion."""
    g = torch.Generator().manual_seed(8)
    x0 = {"latent": torch.randn(1, 3, 16, 4, 6, generator=g),
          "motion": torch.randn(1, 9, 340, 3, generator=g)}
    shared = schedule.sampling_scheduler(kind, 8)
    alone = {k: schedule.sampling_scheduler(kind, 8) for k in x0}
    x = {k: torch.randn(v.shape, generator=g) for k, v in x0.items()}
    y = dict(x)
    gen_x, gen_y = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    for t in shared.timesteps:
        x = {k: step(shared, x0[k], t, x[k], gen_x) for k in x0}
        y = {k: step(alone[k], x0[k], t, y[k], gen_y) for k in x0}
    for k in x0:
        torch.testing.assert_close(x[k], y[k], rtol=0, atol=0)
        torch.testing.assert_close(x[k], x0[k], rtol=0, atol=1e-5)
