"""Publishing: conversion from/to timm, the paper's checkpoints and transformers, the model card (template +
training curves) and the upload. Imports hf_deit.models only."""
