//! Approximate byte size of values a plugin returns, to enforce the output cap cheaply.

use crate::types::{
    ContextFile, Decision, FaultEvent, Outcome, Patch, PluginInfo, ResourceRef, SourceInfo,
};

pub(crate) trait OutputSize {
    fn output_size(&self) -> usize;
}

impl OutputSize for String {
    fn output_size(&self) -> usize {
        self.len()
    }
}

impl OutputSize for () {
    fn output_size(&self) -> usize {
        0
    }
}

impl OutputSize for Vec<u8> {
    fn output_size(&self) -> usize {
        self.len()
    }
}

impl<T: OutputSize> OutputSize for Option<T> {
    fn output_size(&self) -> usize {
        self.as_ref().map_or(0, OutputSize::output_size)
    }
}

impl OutputSize for (String, String) {
    fn output_size(&self) -> usize {
        self.0.len() + self.1.len() + 8
    }
}

impl<T: OutputSize> OutputSize for Vec<T> {
    fn output_size(&self) -> usize {
        self.iter().map(OutputSize::output_size).sum::<usize>() + 8
    }
}

impl OutputSize for ResourceRef {
    fn output_size(&self) -> usize {
        self.api_version.len()
            + self.kind.len()
            + self.name.len()
            + self.namespace.output_size()
            + self.uid.output_size()
    }
}

impl OutputSize for FaultEvent {
    fn output_size(&self) -> usize {
        self.fault_id.len()
            + self.cluster.len()
            + self.resource.output_size()
            + self.fault_type.len()
            + self.context.len()
            + self.timestamp.len()
            + self.labels.output_size()
            + 16
    }
}

impl OutputSize for ContextFile {
    fn output_size(&self) -> usize {
        self.path.len() + self.content.len()
    }
}

impl OutputSize for Patch {
    fn output_size(&self) -> usize {
        self.labels.output_size()
            + self.annotations.output_size()
            + self.agent_profile.output_size()
            + self.context_files.output_size()
    }
}

impl OutputSize for Decision {
    fn output_size(&self) -> usize {
        match self {
            Decision::Proceed(patch) => patch.output_size(),
            Decision::Skip(reason) => reason.len(),
            Decision::Delay(_) => 4,
        }
    }
}

impl OutputSize for Outcome {
    fn output_size(&self) -> usize {
        self.report_markdown.output_size() + self.fields.output_size()
    }
}

impl OutputSize for PluginInfo {
    fn output_size(&self) -> usize {
        self.name.len()
            + self.version.len()
            + self.description.len()
            + self.capabilities.outbound_hosts.output_size()
            + self.capabilities.env_vars.output_size()
            + self.capabilities.read_only_dirs.output_size()
    }
}

impl OutputSize for SourceInfo {
    fn output_size(&self) -> usize {
        self.info.output_size() + 256
    }
}

impl<T: OutputSize, E: OutputSize> OutputSize for Result<T, E> {
    fn output_size(&self) -> usize {
        match self {
            Ok(value) => value.output_size(),
            Err(error) => error.output_size(),
        }
    }
}

impl OutputSize for crate::types::DecodeError {
    fn output_size(&self) -> usize {
        match self {
            crate::types::DecodeError::Malformed(message)
            | crate::types::DecodeError::Unsupported(message) => message.len(),
        }
    }
}

impl OutputSize for crate::types::PluginError {
    fn output_size(&self) -> usize {
        self.message.len()
    }
}
