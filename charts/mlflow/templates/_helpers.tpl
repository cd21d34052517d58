{{/*
Names, labels and the checks every manifest relies on.
*/}}

{{- define "mlflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-mlflow, or the release name alone when it already contains the chart name. */}}
{{- define "mlflow.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mlflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mlflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mlflow.labels" -}}
helm.sh/chart: {{ include "mlflow.chart" . }}
{{ include "mlflow.selectorLabels" . }}
app.kubernetes.io/version: {{ include "mlflow.imageTag" . | quote }}
app.kubernetes.io/component: tracking-server
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "mlflow.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "mlflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mlflow.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create=false: the existing ServiceAccount (with its S3 access) the server runs as" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Fail early, with the fix in the message, instead of rendering a server that cannot start or
that would reach S3 with no credentials.
*/}}
{{- define "mlflow.validate" -}}
{{- $dest := required "artifacts.destination is required: the s3://<bucket>/<prefix> where the server stores artifacts (e.g. --set artifacts.destination=s3://my-bucket/mlflow)" .Values.artifacts.destination }}
{{- if not (hasPrefix "s3://" $dest) }}
{{- fail (printf "artifacts.destination must be an s3://<bucket>/<prefix> URI, got %q" $dest) }}
{{- end }}
{{- $_ := required "backendStore.existingSecret is required: the Secret holding the PostgreSQL URI (kubectl create secret generic mlflow-backend --from-literal=uri=postgresql://...)" .Values.backendStore.existingSecret }}
{{- $_ = required "backendStore.secretKey is required: the key of backendStore.existingSecret that holds the URI" .Values.backendStore.secretKey }}
{{- if and .Values.serviceAccount.create (not .Values.serviceAccount.roleArn) (not .Values.artifacts.staticCredentialsSecret.name) }}
{{- fail "serviceAccount.roleArn is required: the IAM role (IRSA) that gives the server S3 access to artifacts.destination. Alternatives: serviceAccount.create=false with serviceAccount.name of an existing ServiceAccount, or artifacts.staticCredentialsSecret.name for MinIO on kind" }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.host) }}
{{- fail "ingress.host is required when ingress.enabled=true (it is also added to --allowed-hosts)" }}
{{- end }}
{{- end }}

{{/*
Host header values the server accepts (MLflow >= 3.5 rejects the rest with 403): the
Service's in-cluster DNS names with and without the port, localhost/127.0.0.1 on any port for
`kubectl port-forward`, the ingress host, and server.allowedHosts. Comma-separated.
*/}}
{{- define "mlflow.allowedHosts" -}}
{{- $svc := include "mlflow.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $port := toString .Values.service.port }}
{{- $hosts := list }}
{{- range $name := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns $.Values.clusterDomain) }}
{{- $hosts = append $hosts $name }}
{{- $hosts = append $hosts (printf "%s:%s" $name $port) }}
{{- end }}
{{- $hosts = concat $hosts (list "localhost" "localhost:*" "127.0.0.1" "127.0.0.1:*") }}
{{- if .Values.ingress.enabled }}
{{- $hosts = append $hosts .Values.ingress.host }}
{{- end }}
{{- $hosts = concat $hosts .Values.server.allowedHosts }}
{{- join "," (uniq $hosts) }}
{{- end }}

{{/* Origins allowed to POST/PUT/DELETE: the ingress URL (the UI) plus server.corsAllowedOrigins. */}}
{{- define "mlflow.corsOrigins" -}}
{{- $origins := list }}
{{- if .Values.ingress.enabled }}
{{- $origins = append $origins (printf "%s://%s" (ternary "https" "http" (not (empty .Values.ingress.tls))) .Values.ingress.host) }}
{{- end }}
{{- $origins = concat $origins .Values.server.corsAllowedOrigins }}
{{- join "," (uniq $origins) }}
{{- end }}
