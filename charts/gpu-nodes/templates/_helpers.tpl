{{/* Labels on every object of this chart. */}}
{{- define "gpu-nodes.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The cluster name; every selector term depends on it, so rendering without it fails. */}}
{{- define "gpu-nodes.clusterName" -}}
{{- required "clusterName is required: the EKS cluster whose subnets/security groups carry karpenter.sh/discovery=<clusterName>" .Values.clusterName -}}
{{- end -}}

{{/* Node IAM role name. */}}
{{- define "gpu-nodes.nodeRole" -}}
{{- default (printf "KarpenterNodeRole-%s" (include "gpu-nodes.clusterName" .)) .Values.nodeRole -}}
{{- end -}}

{{/*
One EC2NodeClass. Call with (dict "root" $ "name" <name> "pool" <pool values>).
*/}}
{{- define "gpu-nodes.ec2NodeClass" -}}
{{- $root := .root -}}
{{- $d := $root.Values.nodeClassDefaults -}}
{{- $p := .pool -}}
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata:
  name: {{ .name }}
  labels: {{- include "gpu-nodes.labels" $root | nindent 4 }}
spec:
  role: {{ include "gpu-nodes.nodeRole" $root | quote }}
  amiSelectorTerms:
    - alias: {{ default $d.amiAlias $p.amiAlias | quote }}
  subnetSelectorTerms:
    - tags:
        karpenter.sh/discovery: {{ include "gpu-nodes.clusterName" $root | quote }}
  securityGroupSelectorTerms:
    - tags:
        karpenter.sh/discovery: {{ include "gpu-nodes.clusterName" $root | quote }}
  {{- with $p.instanceStorePolicy }}
  instanceStorePolicy: {{ . }}
  {{- end }}
  blockDeviceMappings:
    - deviceName: /dev/xvda
      ebs:
        volumeSize: {{ default $d.rootVolumeSize $p.rootVolumeSize }}
        volumeType: {{ $d.rootVolumeType }}
        iops: {{ $d.rootVolumeIops }}
        throughput: {{ $d.rootVolumeThroughput }}
        encrypted: true
        deleteOnTermination: true
  metadataOptions:
    httpEndpoint: enabled
    httpProtocolIPv6: disabled
    httpPutResponseHopLimit: {{ $d.httpPutResponseHopLimit }}
    httpTokens: required
  tags:
    autoe2e/node-pool: {{ .name | quote }}
    {{- with $d.tags }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}
